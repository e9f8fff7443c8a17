"""Judge plans without executing them: plan-level success and final-frame error.

A fixed set of start states (evaluation seeds, disjoint from training) is planned
from; each plan is scored by ``unipi.plan_score.PlanScorer`` and its last frame is
compared with where the scripted expert's demonstration from the same start is at the
same time::

    cases = plan_cases(["place"], ["seen", "novel"], episodes=32, image_size=(32, 32),
                       horizon=56)
    report = evaluate_plans(lambda images, texts: my_planner(images, texts), cases)
    report["cells"]["place/seen"]["success"]

``plan_fn(images uint8 (B, H, W, 3), instructions [B]) -> uint8 (B, F, H, W, 3)``.
Frame errors are in [0, 1] pixel units: ``final_mse`` over the whole last frame, and
``changed_error`` (mean absolute error) over the pixels where the expert's last frame
differs from the first; a plan that copies frame 0 gives the ``copy_*`` baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from unipi.plan_score import PlanScorer, StartScene

CHANGED_THRESHOLD = 0.05  # max channel difference (0-1) that counts as a changed pixel


@dataclass
class PlanCase:
    """One start state to plan from, with the expert's frame ``horizon`` steps later."""

    family: str
    split: str
    seed: int
    instruction: str
    image: np.ndarray  # (H, W, 3) uint8, the observation planned from
    scene: StartScene
    expert_last: np.ndarray  # (H, W, 3) uint8
    expert_success: bool

    @property
    def cell(self) -> str:
        return f"{self.family}/{self.split}"


def plan_cases(families: Sequence[str], splits: Sequence[str], episodes: int,
               image_size: tuple[int, int], horizon: int, seed_offset: int = 0
               ) -> list[PlanCase]:
    """``episodes`` start states per (family, split): evaluation seeds, instructions
    cycling through the split's tasks (as ``unipi.evaluate`` does)."""
    import envs
    from envs.expert import run_expert_episode
    from unipi.evaluate import _instructions, cell_seed

    cases = []
    for family in families:
        env = envs.make_env(family, image_size=tuple(image_size),
                            max_episode_steps=max(horizon, 1))
        for split in splits:
            texts = _instructions(family, split)
            for i in range(episodes):
                seed = cell_seed(family, split, i, seed_offset)
                ep = run_expert_episode(env, seed, instruction=texts[i % len(texts)],
                                        max_steps=horizon)
                env.reset(seed=seed, options={"instruction": texts[i % len(texts)]})
                cases.append(PlanCase(family, split, seed, ep["instruction"], ep["frames"][0],
                                      StartScene.from_env(env), ep["frames"][-1],
                                      ep["success"]))
        env.close()
    return cases


def _frame_errors(last: np.ndarray, case: PlanCase) -> tuple[float, float]:
    a, b = last.astype(np.float32) / 255, case.expert_last.astype(np.float32) / 255
    changed = np.abs(b - case.image.astype(np.float32) / 255).max(axis=-1) > CHANGED_THRESHOLD
    mse = float(np.square(a - b).mean())
    err = float(np.abs(a - b).mean(axis=-1)[changed].mean()) if changed.any() else 0.0
    return mse, err


def evaluate_plans(plan_fn: Callable[[np.ndarray, list[str]], np.ndarray],
                   cases: Sequence[PlanCase], batch_size: int = 32,
                   scorer: PlanScorer | None = None) -> dict:
    """Plan from every case and score; returns ``{"cells": {cell: metrics}, "all": ...}``.

    Metrics: ``success`` (fraction of plans that achieve the instruction in their last
    frame), ``target_found``, ``others_unmoved``, ``final_mse``, ``changed_error``, and
    the same two errors of copying frame 0 (``copy_final_mse``, ``copy_changed_error``),
    ``n`` plans, and ``expert_success`` (the scorer on the expert's own last frame).
    """
    scorer = scorer or PlanScorer()
    rows = []
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        videos = np.asarray(plan_fn(np.stack([c.image for c in batch]),
                                    [c.instruction for c in batch]))
        for case, video in zip(batch, videos):
            s = scorer.score(video, case.scene)
            expert = scorer.score(np.stack([case.image, case.expert_last]), case.scene)
            mse, err = _frame_errors(video[-1], case)
            copy_mse, copy_err = _frame_errors(case.image, case)
            rows.append((case.cell, dict(
                success=s.success, target_found=s.target_found,
                others_unmoved=s.others_unmoved, final_mse=mse, changed_error=err,
                copy_final_mse=copy_mse, copy_changed_error=copy_err,
                expert_success=expert.success)))
    cells = {}
    for cell in dict.fromkeys(c for c, _ in rows):
        cells[cell] = _mean([r for c, r in rows if c == cell])
    return {"cells": cells, "all": _mean([r for _, r in rows])}


def _mean(rows: list[dict]) -> dict:
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["n"] = len(rows)
    return out
