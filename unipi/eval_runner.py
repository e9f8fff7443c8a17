"""Build the agent a request names and evaluate it, one (family, split) cell per process.

``unipi eval`` and ``unipi demo`` go through ``run_evaluation``. Every episode's seed
is fixed by its cell and index (``unipi.evaluate.cell_seed``) and the planner's noise
by that seed, so results do not depend on ``workers``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from unipi.checkpoint import atomic_write_bytes


@dataclass
class EvalRequest:
    families: list[str] = field(default_factory=lambda: ["place", "relation"])
    splits: list[str] = field(default_factory=lambda: ["seen", "novel"])
    episodes: int = 50
    model: str | None = None  # model folder; None = the shipped weights
    expert: bool = False  # evaluate the scripted expert instead
    out_dir: str = "outputs/eval"
    video_episodes: int = 2
    seed_offset: int = 0
    open_loop: bool = False
    steps: int | None = None
    guidance: float | None = None


def build_agent(request: EvalRequest):
    """(agent, label, image_size) for the request."""
    from unipi.agent import ExpertAgent, UniPiAgent
    from unipi.model_dir import load_idm, load_model_config, load_planner

    if request.expert:
        return ExpertAgent(), "expert", (32, 32)
    cfg = load_model_config(request.model)
    agent_cfg = replace(cfg.agent, open_loop=request.open_loop or cfg.agent.open_loop)
    if request.steps is not None:
        agent_cfg.num_inference_steps = request.steps
    if request.guidance is not None:
        agent_cfg.guidance_scale = request.guidance
    agent = UniPiAgent(load_planner(request.model), load_idm(request.model), agent_cfg)
    return agent, "unipi", tuple(cfg.env.image_size)


def _run_cell(args: tuple[dict, str, str, bool]) -> dict:
    from unipi.evaluate import evaluate

    request, family, split, single_thread = args
    if single_thread:
        import torch

        torch.set_num_threads(1)
    request = EvalRequest(**request)
    agent, label, size = build_agent(request)
    out = Path(request.out_dir) / "cells" / f"{family}_{split}"
    info = evaluate(agent, families=[family], splits=[split], episodes=request.episodes,
                    out_dir=out, video_episodes=request.video_episodes,
                    seed_offset=request.seed_offset, image_size=size, label=label)
    info["videos"] = [str(Path("cells") / f"{family}_{split}" / v) for v in info["videos"]]
    return info


def run_evaluation(request: EvalRequest, workers: int = 1) -> dict:
    """Evaluate every (family, split) cell; write and return the merged eval_info."""
    from unipi.evaluate import format_table, summarize

    cells = [(asdict(request), f, s, workers > 1) for f in request.families
             for s in request.splits]
    if workers > 1:
        with mp.get_context("spawn").Pool(min(workers, len(cells))) as pool:
            parts = pool.map(_run_cell, cells)
    else:
        parts = [_run_cell(c) for c in cells]
    records = [r for p in parts for r in p["episodes"]]
    summary = {**parts[0]["summary"], "cells": summarize(records),
               "request": asdict(request)}
    info = {"summary": summary, "episodes": records,
            "videos": [v for p in parts for v in p["videos"]]}
    out = Path(request.out_dir)
    atomic_write_bytes(out / "eval_info.json", json.dumps(info, indent=2).encode())
    info["table"] = format_table(summary)
    return info
