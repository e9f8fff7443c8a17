"""Plan-level success of a planner recipe against CPU time spent training it.

    python benchmarks/learning_curve.py --variant default --minutes 30,60,120
    python benchmarks/learning_curve.py --variant lr1e-3 --minutes 30 planner.train.lr=1e-3
    python benchmarks/learning_curve.py --report      # every variant's curve, one table

Trains the base (keyframe) stage of ``--config`` with ``key=value`` overrides, in one
process with ``--threads`` torch threads and no loader workers, and snapshots its EMA
weights when the process's CPU time (``time.process_time``, so other load on the
machine does not count) passes each mark of ``--minutes``. Then every snapshot plans
from the same fixed start states (evaluation seeds; ``--episodes`` per family x split)
and is scored without executing: plan-level success (``unipi.plan_score``), error of
the last frame against the expert's, and the same error for copying frame 0.

The base stage alone decides plan-level success: the temporal super-resolution model
keeps the keyframes and only fills in the frames between them.

Writes ``<out>/<variant>/curve.json`` (resumable: a killed run continues with
``--resume``; evaluated snapshots are not evaluated again) and prints the table.
``--report`` gathers every ``curve.json`` under ``--out`` into ``--report-file``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logger = logging.getLogger("learning_curve")
ROOT = Path(__file__).resolve().parents[1]
CELLS = ("place/seen", "place/novel", "relation/seen", "relation/novel")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tabletop.yaml"))
    p.add_argument("--variant", default="default", help="name of this recipe")
    p.add_argument("--minutes", default="30,60,120", help="CPU-minute marks, e.g. 30,60,120")
    p.add_argument("--episodes", type=int, default=32, help="start states per family x split")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.add_argument("--out", default=str(ROOT / "runs" / "curves"))
    p.add_argument("--resume", action="store_true", help="continue a killed run")
    p.add_argument("--eval-only", action="store_true", help="only score existing snapshots")
    p.add_argument("--report", action="store_true", help="tabulate every variant under --out")
    p.add_argument("--report-file",
                   default=str(ROOT / "benchmarks" / "results" / "learning_curves.md"))
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ training
class CpuBudget:
    """Training callback: snapshot the EMA model at each CPU-minute mark, stop at the last.

    CPU seconds of earlier (killed) runs are carried in ``progress.json``, written with
    every checkpoint, so a resumed run continues the same clock.
    """

    def __init__(self, folder: Path, marks: list[float], every: int, resume: bool):
        self.folder, self.marks, self.every = folder, sorted(marks), every
        progress = folder / "progress.json"
        state = json.loads(progress.read_text()) if resume and progress.is_file() else {}
        self.offset = float(state.get("cpu_seconds", 0.0))
        self.wall_offset = float(state.get("wall_seconds", 0.0))
        self.start = self.wall_start = None  # the clocks start at the first step
        self.snapshots = state.get("snapshots", {})

    def cpu_seconds(self) -> float:
        return self.offset + time.process_time() - self.start

    def wall_seconds(self) -> float:
        return self.wall_offset + time.perf_counter() - self.wall_start

    def _save_progress(self, step: int) -> None:
        from unipi.checkpoint import atomic_write_bytes

        state = {"step": step, "cpu_seconds": self.cpu_seconds(),
                 "wall_seconds": self.wall_seconds(),
                 "snapshots": self.snapshots}
        atomic_write_bytes(self.folder / "progress.json", json.dumps(state, indent=2).encode())

    def __call__(self, step: int, ema_model) -> bool:
        if self.start is None:  # setup (data, text features) is not training time
            self.start, self.wall_start = time.process_time(), time.perf_counter()
        minutes = self.cpu_seconds() / 60
        for mark in self.marks:
            name = f"cpu{mark:06.1f}"
            if minutes >= mark and name not in self.snapshots:
                from unipi.checkpoint import atomic_write_dir

                atomic_write_dir(self.folder / "snapshots" / name, ema_model.save_pretrained)
                self.snapshots[name] = {"minutes": mark, "step": step,
                                        "cpu_seconds": self.cpu_seconds(),
                                        "wall_seconds": self.wall_seconds()}
                logger.info("snapshot %s at step=%d", name, step)
                self._save_progress(step)
        if step % self.every == 0:
            self._save_progress(step)
        return minutes >= self.marks[-1]


def train(cfg, folder: Path, marks: list[float], resume: bool, text_encoder) -> None:
    from unipi.planner.train import train_planner

    budget = CpuBudget(folder, marks, cfg.planner.train.checkpoint_every, resume)
    if len(budget.snapshots) == len(marks):
        return
    train_planner(cfg, "base", folder / "run", resume=resume, max_steps=10**9,
                  text_encoder=text_encoder, callback=budget)


# ---------------------------------------------------------------------------- evaluation
def make_plan_fn(unet, cfg, text_encoder):
    from unipi.planner.diffusion import make_sampling_scheduler, to_uint8
    from unipi.planner.pipeline import _images, sample_keyframes

    p = cfg.planner
    scheduler = make_sampling_scheduler(p.sampling.scheduler, p.diffusion)

    def plan(images: np.ndarray, texts: list[str]) -> np.ndarray:
        first = _images(images)
        text, mask = text_encoder.encode(texts)
        keys = sample_keyframes(unet, scheduler, p, first, text, mask,
                                p.sampling.num_inference_steps, p.sampling.guidance_scale,
                                torch.Generator().manual_seed(cfg.seed))
        out = to_uint8(keys)
        out[:, 0] = images
        return out

    return plan


def evaluate(cfg, folder: Path, episodes: int, text_encoder) -> dict:
    from unipi.checkpoint import atomic_write_bytes
    from unipi.plan_eval import evaluate_plans, plan_cases
    from unipi.planner.unet import SpaceTimeUNet

    curve_path = folder / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else {"points": {}}
    progress = json.loads((folder / "progress.json").read_text())
    p = cfg.planner
    horizon = (p.num_keyframes - 1) * p.frame_stride if p.hierarchy else \
        (p.num_frames - 1) * p.frame_stride // p.tsr_factor
    cases = None
    for name, snap in sorted(progress["snapshots"].items()):
        if name in curve["points"]:
            continue
        cases = cases or plan_cases(["place", "relation"], ["seen", "novel"], episodes,
                                    tuple(cfg.env.image_size), horizon)
        unet = SpaceTimeUNet.from_pretrained(folder / "snapshots" / name).eval()
        t0 = time.perf_counter()
        report = evaluate_plans(make_plan_fn(unet, cfg, text_encoder), cases)
        report.update(snap, eval_seconds=time.perf_counter() - t0)
        curve["points"][name] = report
        logger.info("%s: %s", name, _row(report))
        atomic_write_bytes(curve_path, json.dumps(curve, indent=2).encode())
    return curve


# ---------------------------------------------------------------------------------- table
def _pct(x: float) -> str:
    return f"{100 * x:.0f}"


def _row(point: dict) -> str:
    cells = point["cells"]
    return " | ".join(_pct(cells[c]["success"]) if c in cells else "-" for c in CELLS)


def table(curves: dict[str, dict]) -> str:
    lines = [
        "| variant | CPU-min | steps | Place seen | Place novel | Relation seen | "
        "Relation novel | final MSE | changed-pixel error (copy frame 0) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, curve in curves.items():
        for _, point in sorted(curve["points"].items()):
            a = point["all"]
            lines.append(
                f"| {variant} | {point['minutes']:.0f} | {point['step']} | {_row(point)} | "
                f"{a['final_mse']:.4f} | {a['changed_error']:.3f} "
                f"({a['copy_changed_error']:.3f}) |")
    return "\n".join(lines)


def report(out: Path, report_file: Path) -> str:
    curves = {}
    for path in sorted(out.glob("*/curve.json")):
        curve = json.loads(path.read_text())
        curves[path.parent.name] = curve
    text = table(curves)
    notes = ["", "Plan-level success in % of plans (seen / novel x Place / Relation); "
             "errors in [0, 1] pixel units over all cells. Overrides of each variant:"]
    for name, curve in curves.items():
        notes.append(f"- `{name}`: `{' '.join(curve.get('overrides', [])) or '(config)'}`")
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.write_text(text + "\n" + "\n".join(notes) + "\n")
    for name, curve in curves.items():
        (report_file.parent / "learning_curves" / f"{name}.json").parent.mkdir(exist_ok=True)
        (report_file.parent / "learning_curves" / f"{name}.json").write_text(
            json.dumps(curve, indent=2))
    return text


def main(argv=None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    if args.report:
        print(report(out, Path(args.report_file)))
        return 0

    from unipi.config import load_config
    from unipi.planner.text import TextEncoder

    torch.set_num_threads(args.threads)
    overrides = ["data.workers=0", f"planner.train.torch_threads={args.threads}",
                 *args.overrides]
    cfg = load_config(args.config, overrides)
    folder = out / args.variant
    folder.mkdir(parents=True, exist_ok=True)
    marks = [float(m) for m in args.minutes.split(",")]
    text_encoder = TextEncoder.from_config(cfg.text_encoder)
    if not args.eval_only:
        train(cfg, folder, marks, args.resume, text_encoder)
    curve = evaluate(cfg, folder, args.episodes, text_encoder)
    curve.update(variant=args.variant, overrides=list(args.overrides), config=args.config,
                 threads=args.threads)
    (folder / "curve.json").write_text(json.dumps(curve, indent=2))
    print(table({args.variant: curve}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
