"""UniPi, its ablations and a behaviour-cloning baseline, trained and scored by one harness.

    python benchmarks/compare.py --tiny --out outputs/compare_tiny      # CI, tiny models
    python benchmarks/compare.py --config configs/tabletop.yaml --out outputs/compare \
        --planner-steps 6000 --idm-steps 3000 --bc-steps 3000 --episodes 50
    python benchmarks/compare.py --variants unipi bc --use unipi=MODEL_DIR --set bc.lr=1e-4
    python benchmarks/compare.py --idm unipi/weights/tabletop --out outputs/compare
                                          # the table in README.md (default budgets)

Rows (``--variants``, default all), as in the paper's Tables 1 and 2:

    unipi           the full planner: first frame tiled on channels + temporal hierarchy
    no_frame_cond   planner.conditioning=none      no frame conditioning at all
    no_tiling       planner.conditioning=replace   first frame imposed only while sampling
    no_hierarchy    planner.hierarchy=false        one model generates every frame
    bc              Transformer BC, image + instruction (unipi.baselines)
    expert          the scripted expert (privileged simulator state), for reference

Budgets: each planner stage trains ``--planner-steps`` steps; ``no_hierarchy`` has one
stage and trains it ``2 * --planner-steps`` steps, the same number of optimiser steps
as the two stages of the others. The IDM (``--idm-steps``) is trained once per seed and
shared by the four planner rows (its wall time is counted in each); ``--idm DIR`` shares
an IDM trained before (a model folder's) instead. BC trains
``--bc-steps`` steps on the demonstrations that carry actions (``bc.episodes``).

The planner rows are also scored at plan level (``--plan-episodes`` start states per
cell, default 16): one plan each, not executed, judged by ``unipi.plan_score`` as in
``benchmarks/learning_curve.py``. This separates the planners when the closed loop,
limited by reading actions off generated frames, cannot.

Every model is evaluated by ``unipi.eval_runner.run_evaluation``: the same episode seeds
and the same seen / novel instruction splits for every row. With one training seed the
interval is the 95 % Wilson interval over episodes; with several (``--train-seeds``),
the 95 % Student-t interval over the seeds' success rates, widened to at least the Wilson
interval of all their episodes.

Writes into ``--out``::

    runs/                   training run folders
    models/<row>_s<seed>/   model folders (with budget.json)
    eval/<row>_s<seed>/     eval_info.json of each model (plans.json: plan level)

Running the command again resumes what was cut short and reuses what is done: a model
trained to the requested steps is not trained again, an evaluation of the same request
newer than its model is not run again. ``--use ROW=DIR`` evaluates a given model folder.
    compare.md, compare.json   the table
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("compare")

CELLS = [("place", "seen"), ("place", "novel"), ("relation", "seen"), ("relation", "novel")]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228}  # two-sided 95 % Student-t quantiles by degrees of freedom


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    kind: str  # planner | bc | expert
    overrides: tuple[str, ...] = ()


VARIANTS = {v.name: v for v in (
    Variant("unipi", "UniPi (tiled frame + hierarchy)", "planner"),
    Variant("no_frame_cond", "UniPi, no frame conditioning", "planner",
            ("planner.conditioning=none",)),
    Variant("no_tiling", "UniPi, frame imposed only at sampling (no tiling)", "planner",
            ("planner.conditioning=replace",)),
    Variant("no_hierarchy", "UniPi, no temporal hierarchy", "planner",
            ("planner.hierarchy=false",)),
    Variant("bc", "Transformer BC (image + instruction)", "bc"),
    Variant("expert", "scripted expert (privileged state)", "expert"),
)}


# ------------------------------------------------------------------------------- setup
def tiny_setup(out: Path) -> tuple[str, list[str]]:
    """A 4-episode 16x16 dataset, a random tiny T5 and overrides for tiny models."""
    from unipi.data.collect import collect
    from unipi.planner.testing import save_tiny_t5, tiny_overrides

    data, t5 = out / "data", out / "t5"
    collect(data, 4, families=("place", "relation"), image_size=(16, 16),
            labelled_fraction=1.0, episode_steps=56, progress=False)
    if not (t5 / "config.json").is_file():
        save_tiny_t5(t5)
    overrides = tiny_overrides(16) + [
        f"data.root={data}", "text_encoder.type=t5", f"text_encoder.name_or_path={t5}",
        "planner.train.checkpoint_every=1", "planner.train.warmup_steps=1",
        "idm.warmup_steps=0", "idm.checkpoint_every=1", "idm.batch_size=8",
        "idm.channels=8", "idm.hidden=16", "idm.val_fraction=0.25",
        "bc.warmup_steps=0", "bc.checkpoint_every=1", "bc.batch_size=8", "bc.channels=8",
        "bc.d_model=16", "bc.num_layers=1", "bc.chunk=4", "bc.execute=4",
        "bc.val_fraction=0.25", "agent.num_inference_steps=2", "agent.replan_every=4",
        "agent.max_steps=6",
    ]
    return str(Path(__file__).resolve().parents[1] / "configs" / "tabletop.yaml"), overrides


def _load(config: str, overrides: list[str]):
    from unipi.config import load_config

    return load_config(config, overrides)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _add_wall(path: Path, key: str, seconds: float) -> dict:
    """Add ``seconds`` to the training time of ``key`` kept in ``path`` (JSON)."""
    from unipi.checkpoint import atomic_write_bytes

    walls = _read_json(path)
    walls[key] = walls.get(key, 0.0) + seconds
    atomic_write_bytes(path, json.dumps(walls, indent=2).encode())
    return walls


# ---------------------------------------------------------------------------- training
def train_idm_once(args, base: list[str], seed: int) -> tuple[Path, dict, bool]:
    """The IDM shared by the planner rows of one seed: (run folder, budget, trained now).

    With ``--idm DIR`` the IDM of that folder (``idm/`` + ``idm_metrics.json``, as in a
    model folder) is shared instead, for every seed; its recorded budget is reported.
    """
    from inverse_dynamics.train import train_idm

    if args.idm is not None:  # parse_args checked the folder
        metrics = _read_json(args.idm / "idm_metrics.json")
        return args.idm, {"idm_steps": metrics["step"],
                          "idm_wall_time": metrics.get("wall_seconds"),
                          "idm_from": str(args.idm)}, False
    run = args.out / "runs" / f"idm_s{seed}"
    cfg = _load(args.config, base + [f"seed={seed}", f"idm.steps={args.idm_steps}"])
    trained = _read_json(run / "idm_metrics.json").get("step") != args.idm_steps
    if trained:
        t0 = time.perf_counter()
        resume = (run / "checkpoint" / "state.json").is_file()
        train_idm(cfg, run, resume=resume)
        _add_wall(run / "wall_time.json", "idm", time.perf_counter() - t0)
    walls = _read_json(run / "wall_time.json")
    steps = _read_json(run / "idm_metrics.json")["step"]
    return run, {"idm_steps": steps, "idm_wall_time": walls.get("idm")}, trained


def train_planner_variant(args, base: list[str], variant: Variant, seed: int,
                          idm_run: Path, idm_budget: dict, idm_trained: bool
                          ) -> tuple[Path, dict]:
    """Train (or resume) the stages of a planner row; export its model folder."""
    from unipi.model_dir import export_model_dir
    from unipi.planner.train import train_planner

    hierarchy = "planner.hierarchy=false" not in variant.overrides
    steps = args.planner_steps if hierarchy else 2 * args.planner_steps
    overrides = base + list(variant.overrides) + [
        f"seed={seed}", f"planner.train.steps={steps}",
        f"planner.train.torch_threads={args.threads}"]
    cfg = _load(args.config, overrides)
    run, model = args.out / "runs" / f"{variant.name}_s{seed}", _model_dir(args, variant, seed)
    stages = ("base", "tsr") if hierarchy else ("base",)
    done = {}
    same_idm = _read_json(model / "budget.json").get("idm_from") == idm_budget.get("idm_from")
    fresh = idm_trained or not same_idm or not (model / "config.json").is_file()
    for stage in stages:
        state = run / stage / "checkpoint" / "state.json"
        if _read_json(state).get("step", 0) < steps:  # else trained by an earlier run
            t0 = time.perf_counter()
            train_planner(cfg, stage=stage, out_dir=run, resume=True)
            _add_wall(run / "wall_time.json", stage, time.perf_counter() - t0)
            fresh = True
        done[stage] = _read_json(state)["step"]
    if fresh:
        for name in ("idm", "idm_metrics.json"):
            src, dst = idm_run / name, run / name
            if dst.exists():
                shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
            shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
        export_model_dir(run, model)
    walls = _read_json(run / "wall_time.json")
    budget = {
        "planner_steps": {"base": done["base"], "tsr": done.get("tsr", 0)},
        "batch_size": cfg.planner.train.batch_size, **idm_budget,
        "data": _planner_data(cfg),
        "wall_time": sum(walls.values()) + (idm_budget["idm_wall_time"] or 0.0),
    }
    return model, budget


def _model_dir(args, variant: Variant, seed: int) -> Path:
    return args.out / "models" / f"{variant.name}_s{seed}"


def _planner_data(cfg) -> dict:
    from unipi.data import EpisodeStore

    store = EpisodeStore(cfg.data.root, families=list(cfg.env.families), split="seen")
    labelled = len(store.labelled())
    held_out = int(round(labelled * cfg.idm.val_fraction))
    return {"video_episodes": len(store), "idm_train_episodes": labelled - held_out}


def train_bc_variant(args, base: list[str], seed: int) -> tuple[Path, dict]:
    """Train (or resume) the BC row; its run folder is its model folder."""
    from unipi.baselines.train import train_bc

    model = _model_dir(args, VARIANTS["bc"], seed)
    cfg = _load(args.config, base + [f"seed={seed}", f"bc.steps={args.bc_steps}"])
    metrics = _read_json(model / "bc_metrics.json")
    if metrics.get("step") != args.bc_steps:
        resume = (model / "checkpoint" / "state.json").is_file()
        metrics = train_bc(cfg, model, resume=resume)
    b = metrics["budget"]
    budget = {"bc_steps": b["steps"], "batch_size": b["batch_size"],
              "data": {"bc_train_episodes": b["train_episodes"], "episodes": b["episodes"]},
              "wall_time": b["wall_time"], "val": metrics.get("val", {})}
    return model, budget


def model_for(args, base, variant: Variant, seed: int, idm_cache: dict) -> tuple[str | None,
                                                                                dict]:
    """(model folder or None for the expert, budget) of one row and training seed."""
    given = args.use.get(variant.name)
    if given:
        budget = _read_json(Path(given) / "budget.json") or {"note": "given with --use"}
        return given, budget
    if variant.kind == "expert":
        return None, {"note": "scripted; reads the simulator state"}
    if variant.kind == "bc":
        model, budget = train_bc_variant(args, base, seed)
    else:
        if seed not in idm_cache:
            idm_cache[seed] = train_idm_once(args, base, seed)
        model, budget = train_planner_variant(args, base, variant, seed, *idm_cache[seed])
    from unipi.checkpoint import atomic_write_bytes

    atomic_write_bytes(model / "budget.json", json.dumps(budget, indent=2).encode())
    return str(model), budget


# -------------------------------------------------------------------------- evaluation
def evaluate_row(args, variant: Variant, seed: int, model: str | None) -> dict:
    """{"place/seen": (successes, episodes), ...} from the shared harness.

    An earlier evaluation of the same request, newer than the model folder, is reused.
    """
    from dataclasses import asdict

    from unipi.eval_runner import EvalRequest, run_evaluation

    request = EvalRequest(
        families=["place", "relation"], splits=["seen", "novel"], episodes=args.episodes,
        model=model, expert=variant.kind == "expert", video_episodes=args.video_episodes,
        out_dir=str(args.out / "eval" / f"{variant.name}_s{seed}"),
    )
    saved = Path(request.out_dir) / "eval_info.json"
    summary = _read_json(saved).get("summary", {})
    same = summary.get("request") == json.loads(json.dumps(asdict(request)))
    if same and _newer_than_model(saved, model):
        logger.info(f"{variant.name} seed {seed}: reusing {saved}")
    else:
        summary = run_evaluation(request, workers=args.workers)["summary"]
    return {f"{c['family']}/{c['split']}": (c["successes"], c["episodes"])
            for c in summary["cells"]}


def _newer_than_model(saved: Path, model: str | None) -> bool:
    """A saved evaluation is still valid: written after the model folder (or no model)."""
    return model is None or saved.stat().st_mtime > (Path(model) / "config.json").stat().st_mtime


PLAN_KEYS = ("success", "changed_error", "copy_changed_error", "final_mse", "n")


def plan_level(args, variant: Variant, seed: int, model: str | None) -> dict | None:
    """Plan-level scores of a planner row, without executing anything.

    ``--plan-episodes`` start states per family x split (the evaluation seeds, as
    ``benchmarks/learning_curve.py`` uses), one full plan each (the agent's sampling
    settings, generator seeded by ``seed``), scored by ``unipi.plan_score.PlanScorer``
    against the start scene. Returns ``{"place/seen": {"success": ..., ...}, ...}``, or
    None for rows that do not plan. Reused when saved for the same request and newer
    than the model folder.
    """
    if variant.kind != "planner" or model is None or not args.plan_episodes:
        return None
    import torch

    from unipi.checkpoint import atomic_write_bytes
    from unipi.model_dir import load_model_config, load_planner
    from unipi.plan_eval import evaluate_plans, plan_cases

    path = args.out / "eval" / f"{variant.name}_s{seed}" / "plans.json"
    request = {"episodes": args.plan_episodes, "seed": seed}
    saved = _read_json(path)
    if saved.get("request") == request and _newer_than_model(path, model):
        logger.info(f"{variant.name} seed {seed}: reusing {path}")
        return saved["cells"]
    cfg, pipe = load_model_config(model), load_planner(model)
    frames, spacing = cfg.planner.stage_clip("tsr")  # the full plan: frames, env steps apart
    cases = plan_cases(["place", "relation"], ["seen", "novel"], args.plan_episodes,
                       tuple(cfg.env.image_size), (frames - 1) * spacing)

    def plan(images, texts):
        return pipe(images, texts, num_inference_steps=cfg.agent.num_inference_steps,
                    guidance_scale=cfg.agent.guidance_scale,
                    generator=torch.Generator().manual_seed(seed)).videos

    t0 = time.perf_counter()
    report = evaluate_plans(plan, cases, batch_size=16)
    cells = {c: {k: v for k, v in m.items() if k in PLAN_KEYS}
             for c, m in report["cells"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"request": request, "cells": cells,
                                         "seconds": time.perf_counter() - t0},
                                        indent=2).encode())
    return cells


def interval(per_seed: list[tuple[int, int]]) -> dict:
    """Mean success and a 95 % interval: Wilson over the episodes for one training seed;
    for several, the Student-t interval over the seeds' rates or the pooled episodes'
    Wilson interval, whichever is wider (seeds that all agree give no t-width)."""
    from unipi.evaluate import wilson_interval

    k, n = sum(s for s, _ in per_seed), sum(e for _, e in per_seed)
    if len(per_seed) == 1:
        lo, hi = wilson_interval(k, n)
        return {"mean": k / n, "ci95": [lo, hi], "interval": "wilson", "successes": k,
                "episodes": n}
    rates = [s / e for s, e in per_seed]
    mean = sum(rates) / len(rates)
    sd = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1))
    half = T95.get(len(rates) - 1, 1.96) * sd / math.sqrt(len(rates))
    lo, hi = wilson_interval(k, n)  # never narrower than the pooled episodes allow
    ci = [max(0.0, min(lo, mean - half)), min(1.0, max(hi, mean + half))]
    return {"mean": mean, "ci95": ci,
            "interval": "student-t over training seeds, at least pooled Wilson",
            "per_seed": rates, "sd_over_seeds": sd, "successes": k, "episodes": n}


def _mean_plans(per_seed: list[dict]) -> dict | None:
    """Plan-level metrics averaged over training seeds (n summed)."""
    if not per_seed:
        return None
    return {cell: {k: (sum(p[cell][k] for p in per_seed) if k == "n" else
                       sum(p[cell][k] for p in per_seed) / len(per_seed))
                   for k in per_seed[0][cell]} for cell in per_seed[0]}


# ------------------------------------------------------------------------------- table
def _fmt_budget(b: dict) -> tuple[str, str, str]:
    if "planner_steps" in b:
        p = b["planner_steps"]
        steps = f"base {p['base']:,}" + (f" + TSR {p['tsr']:,}" if p["tsr"] else "")
        steps += f" (batch {b['batch_size']}) + IDM {b['idm_steps']:,}"
        d = b["data"]
        data = f"{d['video_episodes']:,} videos, {d['idm_train_episodes']:,} with actions"
    elif "bc_steps" in b:
        steps = f"{b['bc_steps']:,} (batch {b['batch_size']})"
        data = f"{b['data']['bc_train_episodes']:,} with actions ({b['data']['episodes']})"
    else:
        return "-", b.get("note", "-"), "-"
    return steps, data, _fmt_time(b.get("wall_time"))


def _fmt_plan_cell(c: dict) -> str:
    from unipi.evaluate import wilson_interval

    lo, hi = wilson_interval(round(c["success"] * c["n"]), c["n"])
    return f"{100 * c['success']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "| method | Place seen | Place novel | Relation seen | Relation novel "
        "| training steps | data (episodes) | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for family, split in CELLS:
            c = r["cells"][f"{family}/{split}"]
            lo, hi = c["ci95"]
            cells.append(f"{100 * c['mean']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]")
        steps, data, wall = _fmt_budget(r["budget"])
        lines.append(f"| {r['label']} | {' | '.join(cells)} | {steps} | {data} | {wall} |")
    planned = [r for r in rows if r.get("plans")]
    if planned:
        lines += [
            "",
            "Plan level (the imagined video alone, not executed): % of plans whose last "
            "frame achieves the instruction, read off the frame by `unipi.plan_score` "
            f"[95 % Wilson interval], {planned[0]['plans']['place/seen']['n']} start "
            "states per cell; "
            "changed-pixel error of the last frame vs the expert's (copying frame 0 "
            "scores the value in brackets).",
            "",
            "| method | Place seen | Place novel | Relation seen | Relation novel "
            "| changed-pixel error |",
            "|---|---|---|---|---|---|",
        ]
        for r in planned:
            cells = [r["plans"][f"{f}/{s}"] for f, s in CELLS]
            err = sum(c["changed_error"] for c in cells) / len(cells)
            copy = sum(c["copy_changed_error"] for c in cells) / len(cells)
            rates = " | ".join(_fmt_plan_cell(c) for c in cells)
            lines.append(f"| {r['label']} | {rates} | {err:.3f} ({copy:.3f}) |")
    lines += [
        "",
        f"Success rate in % [95 % interval: {meta['interval']}], {meta['episodes']} "
        f"episodes per cell and training seed, training seeds {meta['train_seeds']}; the "
        "same evaluation seeds and instruction splits for every row. Budgets are per "
        f"training seed; train time on {meta['machine']} with {meta['threads']} "
        "torch thread(s).",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/tabletop.yaml")
    p.add_argument("--out", type=Path, default=Path("outputs/compare"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--train-seeds", nargs="+", type=int, default=[0])
    p.add_argument("--planner-steps", type=int, default=1500,
                   help="steps per planner stage (default 1500: every row trained and "
                        "evaluated in about 4 CPU-hours, 2 h as two processes on 2 cores; "
                        "configs/tabletop.yaml trains 6000)")
    p.add_argument("--idm-steps", type=int, default=3000, help="default 3000")
    p.add_argument("--idm", type=Path, default=None, metavar="DIR",
                   help="share this trained IDM (a model folder's idm/ + idm_metrics.json) "
                        "across the planner rows instead of training one")
    p.add_argument("--bc-steps", type=int, default=3000, help="default 3000")
    p.add_argument("--episodes", type=int, default=25, help="per family x split, default 25")
    p.add_argument("--plan-episodes", type=int, default=16,
                   help="plan-level start states per family x split (0: skip), default 16")
    p.add_argument("--video-episodes", type=int, default=0, help="videos per cell")
    p.add_argument("--workers", type=int, default=1, help="evaluation processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training")
    p.add_argument("--use", nargs="+", action="extend", default=[], metavar="ROW=DIR",
                   help="evaluate this model folder for the row instead of training one")
    p.add_argument("--tiny", action="store_true",
                   help="tiny models, 4 episodes of data, 2 steps, 1 episode per cell (CI)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="config overrides for every row, e.g. bc.lr=1e-4")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"--set {bad}: expected KEY=VALUE, e.g. bc.lr=1e-4")
    bad = [u for u in args.use if "=" not in u or u.split("=")[0] not in VARIANTS]
    if bad:
        p.error(f"--use {bad}: expected ROW=DIR with ROW in {list(VARIANTS)}")
    args.use = dict(u.split("=", 1) for u in args.use)
    if args.idm is not None and not ((args.idm / "idm" / "config.json").is_file()
                                     and (args.idm / "idm_metrics.json").is_file()):
        p.error(f"--idm {args.idm}: expected a folder with idm/config.json and "
                "idm_metrics.json (a model folder, e.g. unipi/weights/tabletop)")
    if args.plan_episodes < 0:
        p.error(f"--plan-episodes {args.plan_episodes}: must be >= 0 (0 skips plan level)")
    for key in ("planner_steps", "idm_steps", "bc_steps", "episodes", "workers", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} {getattr(args, key)}: must be >= 1")
    if args.tiny:
        args.planner_steps, args.idm_steps, args.bc_steps = 2, 2, 2
        args.episodes = min(args.episodes, 1)
        args.plan_episodes = min(args.plan_episodes, 1)
    return args


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    base = list(args.overrides)
    if args.tiny:
        args.config, tiny = tiny_setup(args.out)
        base = tiny + base

    # 1. train or load every (row, seed), then 2. evaluate it with the shared harness
    rows, idm_cache = [], {}
    for name in args.variants:
        variant, per_seed, budgets, per_seed_plans = VARIANTS[name], [], [], []
        for seed in args.train_seeds:
            model, budget = model_for(args, base, variant, seed, idm_cache)
            budgets.append(budget)
            per_seed.append(evaluate_row(args, variant, seed, model))
            per_seed_plans.append(plan_level(args, variant, seed, model))
            if variant.kind == "expert":
                break  # the expert does not depend on a training seed
        cells = {c: interval([s[c] for s in per_seed]) for c in per_seed[0]}
        plans = _mean_plans([p for p in per_seed_plans if p])
        rows.append({"name": name, "label": variant.label, "overrides": variant.overrides,
                     "cells": cells, "budget": budgets[0], "budgets": budgets,
                     "plans": plans})
        logger.info(f"{name}: " + ", ".join(f"{c} {v['mean']:.1%}" for c, v in cells.items()))

    # 3. one table, as markdown and JSON
    meta = {"config": args.config, "overrides": base, "train_seeds": args.train_seeds,
            "episodes": args.episodes, "threads": args.threads, "tiny": args.tiny,
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "interval": "Wilson over episodes" if len(args.train_seeds) == 1
            else "Student-t over training seeds or pooled Wilson, the wider",
            "budgets": {"planner_steps": args.planner_steps, "idm_steps": args.idm_steps,
                        "bc_steps": args.bc_steps}}
    table = markdown(rows, meta)
    from unipi.checkpoint import atomic_write_bytes

    atomic_write_bytes(args.out / "compare.md", (table + "\n").encode())
    atomic_write_bytes(args.out / "compare.json",
                       json.dumps({"meta": meta, "rows": rows}, indent=2).encode())
    print(table)
    print(f"written to {args.out / 'compare.md'} and {args.out / 'compare.json'}")
    return {"meta": meta, "rows": rows, "table": table}


if __name__ == "__main__":
    from unipi.config import ConfigError
    from unipi.data import DatasetFormatError

    try:
        main()
    except (ConfigError, DatasetFormatError, FileNotFoundError) as err:
        sys.exit(f"compare: error: {err}")
