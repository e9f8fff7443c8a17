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
    video_metrics: bool = False  # also FID / FVD / CLIPScore of the plans (unipi.metrics)
    fid_weights: str | None = None
    fvd_weights: str | None = None
    clip_model: str | None = None
    goal_from_env: bool = False  # pin every plan's end to the expert's final frame
    goal_guidance: float = 0.0  # reconstruction guidance toward that goal
    guide: str | None = None  # classifier folder for classifier guidance
    guide_weight: float = 0.0
    guide_target: str | None = None
    agent_overrides: list[str] = field(default_factory=list)  # "agent.replan_every=8", ...


def build_agent(request: EvalRequest):
    """(agent, label, image_size) for the request."""
    from unipi.agent import ExpertAgent, UniPiAgent
    from unipi.baselines.agent import is_bc_model_dir
    from unipi.model_dir import load_idm, load_model_config, load_planner

    if request.expert and request.agent_overrides:
        raise ValueError(f"{request.agent_overrides}: agent settings apply to the planner "
                         "agent, not to --expert")
    if request.expert:
        return ExpertAgent(), "expert", (32, 32)
    if is_bc_model_dir(request.model):
        return _build_bc_agent(request)
    not_agent = [o for o in request.agent_overrides if not o.startswith("agent.")]
    if not_agent:
        raise ValueError(f"overrides {not_agent}: eval takes agent.* settings only, e.g. "
                         "agent.replan_every=8 agent.track_plan=true")
    cfg = load_model_config(request.model, request.agent_overrides)
    agent_cfg = replace(cfg.agent, open_loop=request.open_loop or cfg.agent.open_loop)
    if request.steps is not None:
        agent_cfg.num_inference_steps = request.steps
    if request.guidance is not None:
        agent_cfg.guidance_scale = request.guidance
    guide = _constraints(request, agent_cfg)
    agent = UniPiAgent(load_planner(request.model), load_idm(request.model), agent_cfg,
                       guide=guide)
    return agent, "unipi", tuple(cfg.env.image_size)


def _constraints(request: EvalRequest, agent_cfg) -> object | None:
    """Put the request's goal / guidance into ``agent_cfg``; the classifier (or None)."""
    from unipi.classifier import load_classifier

    if request.goal_from_env or request.goal_guidance:
        agent_cfg.goal_from_env = True
        agent_cfg.goal_guidance = request.goal_guidance
    if request.guide_weight and not request.guide:
        raise ValueError(f"--guide-weight {request.guide_weight} needs a classifier: "
                         "--guide CLASSIFIER_DIR")
    if request.guide_weight:
        agent_cfg.guide_weight = request.guide_weight
    if request.guide_target is not None:
        agent_cfg.guide_target = request.guide_target
    return load_classifier(request.guide) if request.guide else None


def _build_bc_agent(request: EvalRequest):
    """The BC baseline of a folder written by ``unipi train bc`` (same seeds, same cells)."""
    from unipi.baselines.agent import load_bc_agent

    planner_only = {"--open-loop": request.open_loop, "--steps": request.steps,
                    "--guidance": request.guidance, "--video-metrics": request.video_metrics,
                    "--goal-from-env": request.goal_from_env, "--guide": request.guide,
                    "agent overrides": request.agent_overrides}
    asked = [k for k, v in planner_only.items() if v not in (None, False, [])]
    if asked:
        raise ValueError(f"{', '.join(asked)} apply to the planner; {request.model!r} is a "
                         "BC model folder")
    agent, cfg = load_bc_agent(request.model)
    return agent, "bc", tuple(cfg.env.image_size)


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

    if request.video_metrics:  # refuse a bad request before the long evaluation
        from unipi.metrics.video_metrics import check_eval_request

        check_eval_request(request)
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
    if request.video_metrics:
        from unipi.metrics.video_metrics import metrics_for_eval

        info["video_metrics"] = metrics_for_eval(request, summary["cells"])
    return info
