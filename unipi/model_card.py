"""The model card of a model folder: what was trained, on what, how long, how well.

    unipi export --run runs/tabletop --out MODEL_DIR          # writes training.json + card
    unipi card --model MODEL_DIR --eval outputs/eval/eval_info.json \\
        --curve benchmarks/results/learning_curves/default.json   # adds measured results

``training.json`` holds the facts gathered at export (config, data counts, steps, wall
time, hardware of every stage); ``results/`` holds copies of the measured results the
card quotes; ``MODEL_CARD.md`` is written from both and can be rewritten at any time.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from unipi.checkpoint import atomic_write_bytes


def hardware_summary() -> str:
    """One line naming the machine a run used, e.g. '2 CPU cores (x86_64), torch 2.13.0'."""
    import torch

    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        device = f"{os.cpu_count()} CPU cores ({platform.machine()}), " \
                 f"{torch.get_num_threads()} torch threads"
    return f"{device}, torch {torch.__version__}"


def dataset_counts(root: str | os.PathLike) -> dict:
    """Episodes per family and split, labelled episodes, and the seed range of a dataset."""
    import pyarrow.parquet as pq

    from unipi.data.format import EPISODE_KEY

    root = Path(root)
    counts: dict = {"root": str(root), "episodes": 0, "labelled": 0, "by_family": {}}
    seeds = []
    for path in sorted((root / "episodes").glob("seed_*.parquet")):
        record = json.loads(pq.read_schema(path).metadata[EPISODE_KEY])
        counts["episodes"] += 1
        counts["labelled"] += bool(record["labelled"])
        key = f"{record['family']}/{record['split']}"
        counts["by_family"][key] = counts["by_family"].get(key, 0) + 1
        seeds.append(int(record["seed"]))
    counts["seed_range"] = [min(seeds), max(seeds)] if seeds else None
    counts["discarded"] = len(list((root / "failed").glob("seed_*.json")))
    return counts


def training_facts(run: Path, cfg) -> dict:
    """Steps, wall time and hardware of each stage of a run folder, and the data used."""
    from unipi.planner.train import checkpoint_state

    facts: dict = {"stages": {}}
    for stage in ("base", "tsr"):
        ckpt = run / stage / "checkpoint"
        if ckpt.is_dir():
            facts["stages"][stage] = checkpoint_state(ckpt)
    idm = run / "idm_metrics.json"
    if idm.is_file():
        facts["stages"]["idm"] = json.loads(idm.read_text())
    data_root = Path(cfg.data.root)
    if (data_root / "episodes").is_dir():
        facts["data"] = dataset_counts(data_root)
    return facts


def _params(folder: Path) -> int | None:
    from safetensors import safe_open

    path = folder / "diffusion_pytorch_model.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys()
                   if not k.endswith(("action_mean", "action_std")))


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _hours(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 3600:.2f} h"


def render_card(model_dir: Path) -> str:
    """MODEL_CARD.md text from ``training.json``, ``config.json`` and ``results/``."""
    from unipi.config import config_from_dict

    cfg = config_from_dict(json.loads((model_dir / "config.json").read_text()))
    facts = json.loads((model_dir / "training.json").read_text())
    p = cfg.planner
    lines = [
        f"# Model card: `{model_dir.name}`", "",
        "A UniPi agent for the simulated tabletop (`envs/`): a text-conditioned video "
        "planner (keyframe U-Net + temporal super-resolution U-Net) and an inverse-dynamics "
        "model, trained with this project's own commands.", "",
        "## Configuration", "",
        f"- frames: {tuple(cfg.env.image_size)} pixels; {p.num_keyframes} keyframes "
        f"{p.frame_stride} env steps apart, x{p.tsr_factor} temporal super-resolution -> "
        f"{p.num_frames} frames, {p.frame_stride // p.tsr_factor} env steps apart",
        f"- conditioning: `{p.conditioning}`, hierarchy: {p.hierarchy}, target: "
        f"{'change from frame 0 (residual)' if p.diffusion.residual else 'frames'}, "
        f"prediction: {p.diffusion.prediction_type}, motion weight {p.diffusion.motion_weight}",
        f"- text encoder: `{cfg.text_encoder.type}` {cfg.text_encoder.name_or_path or '(packaged)'}"
        f"; text FiLM in the base U-Net: {p.base.text_film}",
        f"- sampling: {p.sampling.scheduler}, {cfg.agent.num_inference_steps} steps, guidance "
        f"{cfg.agent.guidance_scale}; the agent re-plans every {cfg.agent.replan_every} env steps",
    ]
    for name, folder in (("base U-Net", "planner/base_unet"), ("TSR U-Net", "planner/tsr_unet"),
                         ("IDM", "idm")):
        n = _params(model_dir / folder)
        if n:
            lines.append(f"- {name}: {n:,} parameters")
    lines += ["", "The full resolved configuration is `config.json`.", "", "## Data", ""]
    data = facts.get("data")
    if data:
        lines.append(f"{data['episodes']} successful scripted-expert episodes "
                     f"({', '.join(f'{k}: {v}' for k, v in sorted(data['by_family'].items()))}),"
                     f" {data['labelled']} with action labels (used by the IDM); training seeds "
                     f"{data['seed_range'][0]}..{data['seed_range'][1]}, "
                     f"{data['discarded']} unsuccessful episodes discarded.")
    else:
        lines.append("(dataset counts were not available at export)")
    lines += ["", "## Training", "", "| stage | steps | wall time | hardware |", "|---|---|---|---|"]
    for stage, st in facts.get("stages", {}).items():
        lines.append(f"| {stage} | {st.get('step', '?')} | {_hours(st.get('wall_seconds'))} | "
                     f"{st.get('hardware', '?')} |")
    idm = facts.get("stages", {}).get("idm", {}).get("val")
    if idm:
        lines += ["", "Inverse dynamics, held-out action error: " +
                  ", ".join(f"{k} {v:.4f}" for k, v in idm.items() if isinstance(v, float))]
    lines += _results(model_dir)
    return "\n".join(lines) + "\n"


def _results(model_dir: Path) -> list[str]:
    results = model_dir / "results"
    lines = []
    eval_info = results / "eval_info.json"
    if eval_info.is_file():
        from unipi.evaluate import format_table

        info = json.loads(eval_info.read_text())
        req = info["summary"].get("request", {})
        lines += ["", "## Closed-loop success", "",
                  f"{info['summary']['episodes_per_cell']} seeded episodes per cell, evaluation "
                  f"seeds (disjoint from training), open loop: {req.get('open_loop', False)}.",
                  "", format_table(info["summary"])]
    curve = results / "learning_curve.json"
    if curve.is_file():
        import importlib.util

        path = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curve.py"
        data = json.loads(curve.read_text())
        lines += ["", "## Plan-level success against training CPU time", "",
                  "Base-stage snapshots scored by `unipi.plan_score` on fixed evaluation "
                  "start states (`benchmarks/learning_curve.py`).", ""]
        if path.is_file():
            spec = importlib.util.spec_from_file_location("learning_curve", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            lines.append(mod.table({data.get("variant", "this model"): data}))
    metrics = results / "video_metrics.md"
    if metrics.is_file():
        lines += ["", "## Video quality", "", metrics.read_text().strip()]
    return lines


def write_model_card(model_dir: str | os.PathLike, eval_info: str | None = None,
                     curve: str | None = None, video_metrics: str | None = None) -> Path:
    """Copy the given result files into ``model_dir/results`` and (re)write the card."""
    model_dir = Path(model_dir)
    for src, name in ((eval_info, "eval_info.json"), (curve, "learning_curve.json"),
                      (video_metrics, "video_metrics.md")):
        if src is not None:
            if not Path(src).is_file():
                raise FileNotFoundError(f"{src!r} does not exist")
            atomic_write_bytes(model_dir / "results" / name, Path(src).read_bytes())
    card = model_dir / "MODEL_CARD.md"
    atomic_write_bytes(card, render_card(model_dir).encode())
    return card
