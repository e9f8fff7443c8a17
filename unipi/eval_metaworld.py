"""Meta-World under AVDC's protocol, and its table beside AVDC's published figures.

    unipi eval --env metaworld --model MODEL_DIR --workers 2     # 25 seeds x 3 cameras
    unipi eval --env metaworld --expert --episodes 10            # Meta-World's scripted policies

The protocol of AVDC (Ko et al., ICLR 2024): for each of the 11 tasks, 25 seeds on each
of the cameras corner, corner2 and corner3; an episode succeeds when the env reports
``info["success"]`` within 500 steps; the agent may re-plan up to 5 times (6 plans).
Episode i of task t starts from ``eval_seed(EVAL_SEED_BASE + TASK_SEED_STRIDE * t + i)``
on every camera (AVDC runs the same seeds on each camera), disjoint from every
collection seed. The overall rate is the mean over tasks, as AVDC's. Writes into
``out_dir``::

    eval_info.json                      per-episode records, per-task summary, budget
    table.md                            the table ``unipi eval`` prints
    videos/<task>_<camera>_<i>.mp4      imagined plan | executed frames
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unipi.checkpoint import atomic_write_bytes
from unipi.evaluate import _spacing, video_frames, wilson_interval, write_video
from unipi.seeds import eval_seed

logger = logging.getLogger(__name__)

EVAL_SEED_BASE = 1_000_000  # above the tabletop's evaluation cells
TASK_SEED_STRIDE = 100_000
AVDC_EPISODES, AVDC_MAX_STEPS, AVDC_MAX_REPLANS, AVDC_NUM_TASKS = 25, 500, 5, 11

AVDC_CITATION = ("Ko, Mao, Du, Sun, Tenenbaum, 'Learning to Act from Actionless Videos "
                 "through Dense Correspondences' (AVDC), ICLR 2024, Meta-World results")
# Success rates in %, as published there (25 seeds x 3 cameras per task); only the figures
# quoted here are filled in, "-" in the table marks the rest.
AVDC_FIGURES: dict[str, dict[str, float]] = {
    "AVDC": {"door-open": 72.0, "door-close": 89.3, "handle-press": 81.3, "hammer": 8.0,
             "assembly": 6.7, "overall": 43.1},
    "UniPi (AVDC's run)": {"overall": 6.1},
    "BC-Scratch": {"overall": 16.2},
}
AVDC_DATA = "15 demonstration videos a task (5 per camera, 165 in all)"


def metaworld_eval_seed(task: str, index: int, offset: int = 0) -> int:
    """Evaluation seed of episode ``index`` of ``task`` (the same on every camera)."""
    from envs.metaworld import TASK_NAMES, task_name

    if not 0 <= index < TASK_SEED_STRIDE:
        raise ValueError(f"episode index {index} must be in [0, {TASK_SEED_STRIDE})")
    t = TASK_NAMES.index(task_name(task))
    return eval_seed(EVAL_SEED_BASE + TASK_SEED_STRIDE * t + index, offset)


@dataclass
class MetaWorldEvalRequest:
    tasks: list[str] = field(default_factory=list)  # empty = all 11 of AVDC
    cameras: list[str] = field(default_factory=list)  # empty = corner, corner2, corner3
    episodes: int = AVDC_EPISODES  # seeds per (task, camera)
    max_steps: int = AVDC_MAX_STEPS
    max_replans: int = AVDC_MAX_REPLANS
    model: str | None = None  # model folder; None = the shipped weights
    expert: bool = False  # Meta-World's scripted policies instead
    out_dir: str = "outputs/eval_metaworld"
    video_episodes: int = 1  # per (task, camera)
    seed_offset: int = 0
    steps: int | None = None  # denoising steps
    guidance: float | None = None
    image_size: list[int] | None = None  # the expert's frames; default the model's or 64x64

    def __post_init__(self) -> None:
        from envs.metaworld import CAMERAS, TASK_NAMES, check_camera, task_name

        self.tasks = [task_name(t) for t in self.tasks] or list(TASK_NAMES)
        self.cameras = [check_camera(c) for c in self.cameras] or list(CAMERAS)
        checks = {"--episodes": (self.episodes, 1), "--max-steps": (self.max_steps, 1),
                  "--max-replans": (self.max_replans, 0), "--video-episodes":
                  (self.video_episodes, 0)}
        for flag, (value, low) in checks.items():
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{flag} {value!r}: must be an integer >= {low}")


# ---------------------------------------------------------------------------- agents
def build_metaworld_agent(request: MetaWorldEvalRequest):
    """(agent, label, image_size): the scripted policies, or the model folder's agent with
    at most ``1 + max_replans`` plans."""
    from unipi.agent import ExpertAgent
    from unipi.eval_runner import EvalRequest, build_agent

    if request.expert:
        from envs.metaworld_expert import make_expert_policy

        size = tuple(request.image_size or _model_image_size(request.model) or (64, 64))
        return ExpertAgent(make_policy=make_expert_policy), "expert", size
    agent, label, size = build_agent(EvalRequest(model=request.model, steps=request.steps,
                                                 guidance=request.guidance))
    if hasattr(getattr(agent, "cfg", None), "max_plans"):
        agent.cfg = replace(agent.cfg, max_plans=1 + request.max_replans,
                            max_steps=request.max_steps)
    return agent, label, tuple(size)


def _model_image_size(model: str | None) -> list[int] | None:
    if model is None:
        return None
    from unipi.model_dir import load_model_config

    return list(load_model_config(model).env.image_size)


# ----------------------------------------------------------------------------- cells
def _run_cell(args: tuple[dict, str, str, bool]) -> dict:
    """Every seed of one (task, camera); returns {"episodes": [...], "videos": [...]}."""
    from envs.metaworld import TASKS, make_metaworld_env

    request, task, camera, single_thread = args
    if single_thread:
        import torch

        torch.set_num_threads(1)
    request = MetaWorldEvalRequest(**request)
    agent, label, size = build_metaworld_agent(request)
    env = make_metaworld_env(task, camera, image_size=size,
                             max_episode_steps=request.max_steps)
    out = Path(request.out_dir)
    records, videos = [], []
    try:
        for i in range(request.episodes):
            seed = metaworld_eval_seed(task, i, request.seed_offset)
            want_video = i < request.video_episodes
            result = agent.run_episode(env, seed, instruction=TASKS[task], split="seen",
                                       max_steps=request.max_steps, record=want_video)
            first = result.first_success_step
            records.append({**result.record(), "task": task, "camera": camera,
                            "episode": i, "agent": label,
                            "success": first is not None and first <= request.max_steps})
            if want_video:
                path = write_video(out / "videos" / f"{task}_{camera}_{i:03d}",
                                   video_frames(result, _spacing(agent)))
                videos.append(str(path.relative_to(out)))
    finally:
        env.close()
    k = sum(r["success"] for r in records)
    logger.info(f"{label} {task}/{camera}: {k}/{len(records)} successes")
    return {"episodes": records, "videos": videos}


# --------------------------------------------------------------------------- summary
def _rate(records: list[dict]) -> dict[str, Any]:
    k, n = sum(bool(r["success"]) for r in records), len(records)
    lo, hi = wilson_interval(k, n)
    return {"episodes": n, "successes": k, "success_rate": k / n if n else 0.0,
            "ci95": [lo, hi]}


def summarize_metaworld(records: list[dict], tasks: list[str], cameras: list[str]) -> dict:
    """Per task (pooled over cameras, and per camera) and overall (mean over tasks)."""
    rows = []
    for task in tasks:
        mine = [r for r in records if r["task"] == task]
        rows.append({
            "task": task, **_rate(mine),
            "per_camera": {c: _rate([r for r in mine if r["camera"] == c])["success_rate"]
                           for c in cameras},
            "mean_steps": float(np.mean([r["steps"] for r in mine])),
            "mean_plans": float(np.mean([r["num_plans"] for r in mine])),
            "mean_wall_time": float(np.mean([r["wall_time"] for r in mine])),
        })
    overall = _rate(records)
    overall["success_rate"] = float(np.mean([r["success_rate"] for r in rows]))
    overall["per_camera"] = {c: _rate([r for r in records if r["camera"] == c])
                             ["success_rate"] for c in cameras}
    return {"tasks": rows, "overall": overall}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_metaworld_table(summary: dict, label: str) -> str:
    """Markdown: our rate per task and camera beside AVDC's published figures (in %)."""
    cameras = list(summary["overall"]["per_camera"])
    names = list(AVDC_FIGURES)
    head = ["task", f"ours ({label})", "95 % CI", *cameras, *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in [*summary["tasks"], {"task": "overall", **summary["overall"]}]:
        lo, hi = row["ci95"]
        cells = [row["task"], f"{100 * row['success_rate']:.1f} %",
                 f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                 *[_pct(100 * row["per_camera"][c]) for c in cameras],
                 *[_pct(AVDC_FIGURES[n].get(row["task"])) for n in names]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- budget
def _dataset_counts(root: Path) -> dict | None:
    """Episodes, labelled episodes and episodes per task of a collected folder."""
    from unipi.data.collect import is_labelled
    from unipi.data.collect_metaworld import decode_seed
    from unipi.data.format import read_info

    if not (root / "meta" / "info.json").is_file():
        return None
    info = read_info(root)
    seeds = [int(p.stem.split("_")[1]) for p in (root / "episodes").glob("seed_*.parquet")]
    per_task: dict[str, int] = {}
    for seed in seeds:
        task = decode_seed(seed, info.get("seed_offset", 0))[0]
        per_task[task] = per_task.get(task, 0) + 1
    fraction = info.get("labelled_fraction", 0.0)
    return {"root": str(root), "episodes": len(seeds), "per_task": per_task,
            "labelled": sum(is_labelled(s, fraction) for s in seeds),
            "episode_steps": info.get("episode_steps"), "image_size": info.get("image_size")}


def _hardware() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{device}, torch {torch.__version__}")


def describe_budget(request: MetaWorldEvalRequest) -> dict:
    """What the evaluated agent was trained with (model folder) and evaluated on."""
    budget: dict[str, Any] = {
        "protocol": {"tasks": len(request.tasks), "cameras": request.cameras,
                     "seeds_per_camera": request.episodes, "max_steps": request.max_steps,
                     "max_replans": request.max_replans, "seed_offset": request.seed_offset},
        "eval_hardware": _hardware(),
    }
    if request.expert:
        return budget
    from unipi.model_dir import resolve_model_dir

    folder = resolve_model_dir(request.model)
    cfg = json.loads((folder / "config.json").read_text())
    budget["model"] = str(folder)
    budget["planner_steps"] = cfg["planner"]["train"]["steps"]
    budget["planner_batch"] = cfg["planner"]["train"]["batch_size"]
    budget["idm_steps"] = cfg["idm"]["steps"]
    budget["image_size"] = cfg["env"]["image_size"]
    budget["data"] = _dataset_counts(Path(cfg["data"]["root"])) or {
        "root": cfg["data"]["root"], "note": "folder not found here; counts unknown"}
    card = folder / "MODEL_CARD.md"
    lines = card.read_text().splitlines() if card.is_file() else []
    budget["training_hardware"] = next(
        (ln.strip("-* ") for ln in lines if "hardware" in ln.lower()), "not recorded")
    return budget


def format_budget(budget: dict, label: str) -> str:
    p = budget["protocol"]
    out = [f"Protocol: {p['seeds_per_camera']} seeds x {len(p['cameras'])} cameras per task, "
           f"success within {p['max_steps']} steps, up to {p['max_replans']} re-plans "
           f"(AVDC: {AVDC_EPISODES} x 3, {AVDC_MAX_STEPS} steps, {AVDC_MAX_REPLANS} "
           f"re-plans). Evaluated on: {budget['eval_hardware']}."]
    if p["tasks"] < AVDC_NUM_TASKS:
        out.append(f"Our overall is over {p['tasks']} tasks; the published ones are over "
                   f"all {AVDC_NUM_TASKS}.")
    if "model" in budget:
        d = budget["data"]
        data = (f"{d['episodes']} episodes ({d['labelled']} with actions, "
                f"{d['episode_steps']} steps each) over {len(d['per_task'])} tasks in "
                f"{d['root']}" if "episodes" in d else f"{d['root']} ({d['note']})")
        out.append(f"Ours ({label}, {budget['model']}): planner {budget['planner_steps']} "
                   f"steps a stage (batch {budget['planner_batch']}, configured), IDM "
                   f"{budget['idm_steps']} steps, frames {budget['image_size']}; data: {data}; "
                   f"trained on: {budget['training_hardware']}.")
    out.append(f"Published: {AVDC_CITATION}; AVDC's data: {AVDC_DATA}.")
    return "\n".join(out)


# ------------------------------------------------------------------------------- run
def run_metaworld_evaluation(request: MetaWorldEvalRequest, workers: int = 1) -> dict:
    """Evaluate every (task, camera); write eval_info.json and table.md; return the info
    with ``info["table"]`` (the table and the budget lines)."""
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    budget = describe_budget(request)  # refuses a missing model folder before the work
    cells = [(asdict(request), t, c, workers > 1) for t in request.tasks
             for c in request.cameras]
    if workers > 1:
        with mp.get_context("spawn").Pool(min(workers, len(cells))) as pool:
            parts = pool.map(_run_cell, cells)
    else:
        parts = [_run_cell(c) for c in cells]
    records = [r for p in parts for r in p["episodes"]]
    label = records[0]["agent"]
    summary = summarize_metaworld(records, request.tasks, request.cameras)
    table = format_metaworld_table(summary, label) + "\n\n" + format_budget(budget, label)
    info = {"summary": {**summary, "agent": label, "request": asdict(request),
                        "budget": budget, "published": AVDC_FIGURES,
                        "citation": AVDC_CITATION},
            "episodes": records, "videos": [v for p in parts for v in p["videos"]]}
    out = Path(request.out_dir)
    atomic_write_bytes(out / "eval_info.json", json.dumps(info, indent=2).encode())
    atomic_write_bytes(out / "table.md", (table + "\n").encode())
    info["table"] = table
    return info
