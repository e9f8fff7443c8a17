"""Success rate of an agent (or the scripted expert) per task family and split.

    unipi eval --env place --split novel --episodes 50 --model MODEL_DIR
    python -c "from unipi.evaluate import evaluate; ..."   # see evaluate()

Episode ``i`` of cell (family, split) uses the evaluation seed ``cell_seed(family,
split, i)``: disjoint from every training seed (``unipi.seeds``) and different in
every cell. The instruction cycles through the tasks of that split, so each task of
the split is asked about equally often. Writes into ``out_dir``::

    eval_info.json                         per-episode records and the summary
    videos/<family>_<split>_<i>.mp4        imagined plan | executed frames
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unipi.checkpoint import atomic_write_bytes
from unipi.seeds import eval_seed
from unipi.video import side_by_side, upscale

logger = logging.getLogger(__name__)

FAMILIES = ("place", "relation")
SPLITS = ("seen", "novel")
CELL_SEED_STRIDE = 100_000  # seeds per (family, split) cell
Z_95 = 1.959963984540054


def cell_seed(family: str, split: str, index: int, offset: int = 0) -> int:
    """Evaluation seed of episode ``index`` of a cell; distinct across cells."""
    if family not in FAMILIES or split not in SPLITS:
        raise ValueError(f"cell ({family!r}, {split!r}): expected family in {FAMILIES}, "
                         f"split in {SPLITS}")
    if not 0 <= index < CELL_SEED_STRIDE:
        raise ValueError(f"episode index {index} must be in [0, {CELL_SEED_STRIDE})")
    cell = FAMILIES.index(family) * len(SPLITS) + SPLITS.index(split)
    return eval_seed(cell * CELL_SEED_STRIDE + index, offset)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when ``n == 0``."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def summarize(records: list[dict]) -> list[dict]:
    """One row per (family, split) with success rate, 95 % Wilson interval, timings."""
    rows = []
    for family in FAMILIES:
        for split in SPLITS:
            cell = [r for r in records if r["family"] == family and r["split"] == split]
            if not cell:
                continue
            k, n = sum(bool(r["success"]) for r in cell), len(cell)
            lo, hi = wilson_interval(k, n)
            rows.append({
                "family": family, "split": split, "episodes": n, "successes": k,
                "success_rate": k / n, "ci95": [lo, hi],
                "mean_wall_time": float(np.mean([r["wall_time"] for r in cell])),
                "mean_steps": float(np.mean([r["steps"] for r in cell])),
            })
    return rows


def format_table(summary: dict | list[dict]) -> str:
    """Markdown table of a summary (``evaluate(...)["summary"]`` or its rows)."""
    rows = summary["cells"] if isinstance(summary, dict) else summary
    agent = summary.get("agent", "") if isinstance(summary, dict) else ""
    lines = [
        "| agent | family | split | success | 95 % CI | episodes | s / episode |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(
            f"| {agent} | {r['family']} | {r['split']} | {100 * r['success_rate']:.1f} % | "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] | {r['episodes']} | {r['mean_wall_time']:.2f} |"
        )
    return "\n".join(lines)


def _default_make_env(family: str, image_size: tuple[int, int]):
    import envs

    return envs.make_env(family, render_mode="rgb_array", image_size=tuple(image_size))


def _instructions(family: str, split: str) -> list[str]:
    from envs.tasks import tasks_in_split

    tasks = tasks_in_split(family, split)
    if not tasks:
        raise ValueError(f"no tasks in split {split!r} of family {family!r}")
    return [t.instruction for t in tasks]


def evaluate(
    agent,
    families: Sequence[str] = FAMILIES,
    splits: Sequence[str] = SPLITS,
    episodes: int = 50,
    out_dir: str | os.PathLike = "runs/eval",
    video_episodes: int = 2,
    seed_offset: int = 0,
    image_size: tuple[int, int] = (32, 32),
    label: str = "unipi",
    make_env: Callable | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` seeded episodes per (family, split) and write ``eval_info.json``.

    Args:
        agent: anything with ``run_episode(env, seed, instruction=, split=, record=,
            render=)`` returning an ``EpisodeResult`` (``UniPiAgent``, ``ExpertAgent``).
        video_episodes: the first this many episodes of each cell are saved as videos.
        seed_offset: shifts every seed (repeat an evaluation on fresh start states).
        label: the agent's name in the summary and table ("unipi", "expert", ...).
        make_env: ``make_env(family, image_size) -> env``; default ``envs.make_env``.

    Returns:
        ``{"summary": {"agent", "cells": [...], ...}, "episodes": [...], "videos": [...]}``.
    """
    out_dir = Path(out_dir)
    make_env = make_env or _default_make_env
    records, videos = [], []
    for family in families:
        for split in splits:
            env = make_env(family, image_size)
            try:
                r, v = _run_cell(agent, env, family, split, episodes, out_dir,
                                 video_episodes, seed_offset)
            finally:
                env.close()
            records += r
            videos += v
            row = summarize(r)[0]
            logger.info(
                f"{label} {family}/{split}: {row['successes']}/{row['episodes']} "
                f"= {row['success_rate']:.1%} CI95=[{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]"
                f" {row['mean_wall_time']:.2f} s/episode"
            )
    summary = {"agent": label, "episodes_per_cell": episodes, "seed_offset": seed_offset,
               "image_size": list(image_size), "cells": summarize(records)}
    info = {"summary": summary, "episodes": records, "videos": videos}
    atomic_write_bytes(out_dir / "eval_info.json", json.dumps(info, indent=2).encode())
    logger.info("\n" + format_table(summary))
    return info


def _run_cell(agent, env, family, split, episodes, out_dir, video_episodes, seed_offset):
    instructions = _instructions(family, split)
    records, videos = [], []
    for i in range(episodes):
        seed = cell_seed(family, split, i, seed_offset)
        want_video = i < video_episodes
        result = agent.run_episode(
            env, seed, instruction=instructions[i % len(instructions)], split=split,
            record=want_video, render=False,
        )
        if result.split != split:
            raise RuntimeError(
                f"episode {seed=} ran a {result.split!r} task in the {split!r} cell; "
                f"instruction {result.instruction!r}"
            )
        records.append({**result.record(), "family": family, "episode": i})
        if want_video:
            path = write_video(out_dir / "videos" / f"{family}_{split}_{i:03d}",
                               video_frames(result, _spacing(agent)))
            videos.append(str(path.relative_to(out_dir)))
    return records, videos


def _spacing(agent) -> int:
    idm = getattr(agent, "idm", None)
    return int(idm.config.chunk) if idm is not None else 1


def video_frames(result, spacing: int) -> np.ndarray:
    """uint8 (T+1, h, w, 3): the planned frame being aimed at | the executed frame.

    For step t (the frame after action t-1 of plan j, position i in it) the left panel is
    frame ``ceil((i + 1) / spacing)`` of plan j; with no plans only executed frames.
    """
    if not result.plans:
        return upscale(result.frames, 128)
    left = [result.plans[0][0]]
    for j, i in result.plan_index:
        plan = result.plans[j]
        left.append(plan[min(len(plan) - 1, -(-(i + 1) // spacing))])
    return side_by_side([np.stack(left), result.frames], size=128, gap=4)


def write_video(stem: Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write ``frames`` uint8 (T, H, W, 3) to ``stem.mp4``, or ``stem.gif`` without ffmpeg."""
    from unipi.video import write_video as write

    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        suffix = ".mp4"
    except (ImportError, RuntimeError) as err:
        logger.warning(f"ffmpeg is missing ({err}); writing {stem.name}.gif instead of .mp4")
        suffix = ".gif"
    return write(stem.with_suffix(suffix), frames, fps=fps)
