"""Train one stage of the video planner (``base`` keyframes or ``tsr``), resumable.

    unipi train planner --config configs/tabletop.yaml --stage base --out runs/tabletop
    accelerate launch -m unipi.cli train planner ...        # several processes / GPUs

The two stages are independent runs (two processes may train them side by side); each
writes ``<out>/<stage>/checkpoint/`` and, once both exist, ``export_pipeline`` assembles
their EMA weights into ``<out>/pipeline/`` for ``UniPiPipeline.from_pretrained``.

Randomness: the batch indices, noise, timesteps and text dropout of step n on rank r
come from a generator seeded by (seed, stage, rank, n), so a resumed run draws exactly
what an uninterrupted one would have drawn.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unipi.planner.diffusion import (
    diffusion_loss, from_target, make_noise_scheduler, make_sampling_scheduler, make_unet,
    sample_video, split_clip, target_range, to_model_space, to_uint8,
)
from unipi.planner.pipeline import UniPiPipeline
from unipi.planner.text import TextEncoder
from unipi.planner.unet import SpaceTimeUNet

logger = logging.getLogger(__name__)

STAGES = ("base", "tsr")


# --------------------------------------------------------------------------- randomness
def step_seed(seed: int, stage: str, rank: int, step: int, stream: int) -> int:
    """A seed of its own for each (run seed, stage, rank, step, stream)."""
    words = [seed, STAGES.index(stage), rank, step, stream]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


class StepBatches:
    """Infinite batch sampler: the indices of step n depend only on (seed, rank, n)."""

    def __init__(self, size: int, batch: int, seed: int, stage: str, rank: int, start: int):
        self.size, self.batch, self.args, self.start = size, batch, (seed, stage, rank), start

    def __iter__(self):
        step = self.start
        while True:
            g = torch.Generator().manual_seed(step_seed(*self.args, step, stream=0))
            yield torch.randint(self.size, (self.batch,), generator=g).tolist()
            step += 1


def _rng_state() -> dict:
    version, state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {"python": torch.tensor(state, dtype=torch.int64), "python_version": version,
            "python_gauss": gauss, "numpy": torch.from_numpy(np_keys.astype(np.int64)),
            "numpy_pos": int(np_pos), "numpy_gauss": (int(np_has_gauss), float(np_gauss)),
            "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    random.setstate((s["python_version"], tuple(s["python"].tolist()), s["python_gauss"]))
    keys = s["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, s["numpy_pos"], *s["numpy_gauss"]))
    torch.set_rng_state(s["torch"])


# --------------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's weights (warmed up over early steps)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema, live = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(ema, [p.detach() for p in live], 1.0 - d)


# -------------------------------------------------------------------------- checkpoints
def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")) + [folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder into a temporary sibling, fsync it, then swap it into place."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    _fsync_tree(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_tree(final.parent)


def save_checkpoint(folder: Path, model, ema: EMA, optimizer, step: int, cfg,
                    extra: dict | None = None) -> None:
    """``extra``: more JSON for ``state.json`` (wall time, hardware)."""
    from unipi.config import config_to_dict

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp / "unet", safe_serialization=True)
        ema.model.save_pretrained(tmp / "ema_unet", safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}))
        (tmp / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))

    write_atomic_dir(folder, write)


def checkpoint_state(folder: Path) -> dict:
    """``state.json`` of a checkpoint: step, and wall_seconds / hardware when recorded."""
    return json.loads((Path(folder) / "state.json").read_text())


def load_checkpoint(folder: Path, model, ema: EMA, optimizer) -> int:
    """Restore weights, EMA, optimizer and RNG states; return the step to continue from."""
    from safetensors.torch import load_file

    weights = "diffusion_pytorch_model.safetensors"
    model.load_state_dict(load_file(folder / "unet" / weights))
    ema.model.load_state_dict(load_file(folder / "ema_unet" / weights))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    _set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
    return int(json.loads((folder / "state.json").read_text())["step"])


# ------------------------------------------------------------------------------- export
def export_pipeline(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    text_encoder: TextEncoder | None = None) -> Path | None:
    """Assemble ``run_dir/{base,tsr}/checkpoint`` EMA weights into a pipeline folder.

    Returns the folder, or None (with a log line) while a needed stage is missing.
    """
    from unipi.config import config_from_dict

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "pipeline"
    ckpt = {s: run_dir / s / "checkpoint" for s in STAGES}
    if not ckpt["base"].is_dir():
        logger.info("export: no %s yet; train stage 'base' first", ckpt["base"])
        return None
    cfg = config_from_dict(json.loads((ckpt["base"] / "config.json").read_text()))
    p = cfg.planner
    if p.hierarchy and not ckpt["tsr"].is_dir():
        logger.info("export: no %s yet; export again once stage 'tsr' is trained", ckpt["tsr"])
        return None
    if p.hierarchy:
        tsr_p = config_from_dict(json.loads((ckpt["tsr"] / "config.json").read_text())).planner
        pairs = {f"planner.{k}": (getattr(p, k), getattr(tsr_p, k)) for k in
                 ("num_keyframes", "frame_stride", "tsr_factor", "conditioning")}
        pairs.update({f"planner.diffusion.{k}": (getattr(p.diffusion, k),
                                                 getattr(tsr_p.diffusion, k))
                      for k in ("prediction_type", "residual", "beta_schedule",
                                "num_train_timesteps")})
        for key, (base_value, tsr_value) in pairs.items():
            if base_value != tsr_value:
                raise ValueError(f"export: {key} differs between the stages: "
                                 f"base {base_value!r}, tsr {tsr_value!r}")
    pipe = UniPiPipeline(
        text_encoder=text_encoder or TextEncoder.from_config(cfg.text_encoder),
        base_unet=SpaceTimeUNet.from_pretrained(ckpt["base"] / "ema_unet"),
        tsr_unet=SpaceTimeUNet.from_pretrained(ckpt["tsr"] / "ema_unet") if p.hierarchy else None,
        scheduler=make_sampling_scheduler(p.sampling.scheduler, p.diffusion),
        planner=p,
    )
    write_atomic_dir(out, pipe.save_pretrained)
    logger.info("exported pipeline to %s", out)
    return out


# ------------------------------------------------------------------------------ samples
@torch.no_grad()
def write_samples(path: Path, unet, stage: str, cfg, video, text, mask, steps: int) -> None:
    """A gif of [real | sampled] clips for the first few items of a batch."""
    import imageio.v3 as iio

    n = min(4, video.shape[0])
    video, text, mask = video[:n], text[:n], mask[:n]
    d = cfg.planner.diffusion
    x0, cond, known = split_clip(video, stage, cfg.planner)
    sched = make_sampling_scheduler(cfg.planner.sampling.scheduler, d)
    fake = sample_video(unet, sched, x0.shape, cond, text, mask, known, x0[:, :, known],
                        cfg.planner.sampling.guidance_scale, steps,
                        torch.Generator().manual_seed(cfg.seed), clip=target_range(d))
    real, fake = to_uint8(video), to_uint8(from_target(fake, video[:, :, 0], d))
    rows = np.concatenate([real, fake], axis=3)  # side by side
    frames = np.concatenate(list(rows), axis=1)  # items stacked vertically: (F, nH, 2W, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, duration=250, loop=0)


# ----------------------------------------------------------------------------- training
def make_dataset(cfg, stage: str):
    """The stage's clips: K keyframes at stride s (base) or (K-1)f+1 frames at s/f."""
    from unipi.data import ClipDataset

    num_frames, stride = cfg.planner.stage_clip(stage)
    return ClipDataset(cfg.data.root, num_frames=num_frames, stride=stride,
                       families=list(cfg.env.families), split="seen",
                       max_start=cfg.planner.train.max_clip_start or None)


def _lr_at(step: int, cfg) -> float:
    t = cfg.planner.train
    return t.lr * min(1.0, (step + 1) / max(1, t.warmup_steps))


def _encode(text_encoder: TextEncoder, texts, device):
    features, mask = text_encoder.encode(list(texts))
    return features.to(device), mask.to(device)


def _setup(cfg, stage: str, tiny: bool, run_dir: Path):
    t = cfg.planner.train
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: must be one of {STAGES}")
    if stage == "tsr" and not cfg.planner.hierarchy:
        raise ValueError("stage='tsr' with planner.hierarchy=false: there is no TSR model")
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    accelerator = Accelerator(mixed_precision=t.mixed_precision,
                              cpu=not torch.accelerator.is_available(),  # gloo on CPU
                              log_with="tensorboard" if t.tensorboard and not tiny else None,
                              project_dir=run_dir / stage / "logs")  # TensorBoard events
    set_seed(cfg.seed + accelerator.process_index)
    return accelerator


def _run_state(cfg, stage, accelerator, text_dim, resume, ckpt_dir):
    """Model, EMA, optimizer; restored from ``ckpt_dir`` when resuming."""
    h, w = cfg.env.image_size
    model = make_unet(stage, cfg.planner, h, text_dim)
    ema = EMA(model, cfg.planner.train.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.planner.train.lr,
                                  weight_decay=cfg.planner.train.weight_decay)
    start = 0
    if resume and ckpt_dir.is_dir():
        start = load_checkpoint(ckpt_dir, model, ema, optimizer)
        logger.info("resumed %s from %s at step=%d", stage, ckpt_dir, start)
    elif resume:
        logger.info("resume: no checkpoint at %s; starting at step 0", ckpt_dir)
    ema.model.to(accelerator.device)
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("%s U-Net: num_params=%s", stage, f"{num_params:,}")
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, ema, optimizer, start


def train_planner(cfg, stage: str, out_dir: str | os.PathLike, resume: bool = False,
                  max_steps: int | None = None, tiny: bool = False, dataset=None,
                  text_encoder: TextEncoder | None = None,
                  callback: Callable[[int, torch.nn.Module], bool] | None = None) -> dict:
    """Train ``stage`` ('base' or 'tsr') of the planner of ``cfg`` (an ExperimentConfig).

    ``max_steps`` is the total step count (default ``planner.train.steps``); ``tiny``
    runs 2 steps with a checkpoint and a sample gif at each. ``dataset`` (items
    ``{"video": uint8 (F, H, W, 3), "instruction": str}``) defaults to ``ClipDataset``.
    ``callback(steps_done, ema_model)`` runs after every step (and its checkpoint);
    returning True ends training there (with a final checkpoint).
    Returns ``{"step", "losses", "checkpoint", "model", "ema"}``: this process's losses of
    this run, the trained (unwrapped) model and its EMA copy.
    """
    t = cfg.planner.train
    every_ckpt, every_sample = (1, 1) if tiny else (t.checkpoint_every, t.sample_every)
    max_steps = max_steps or (2 if tiny else t.steps)
    run_dir, ckpt_dir = Path(out_dir), Path(out_dir) / stage / "checkpoint"

    # 1. processes, data, frozen text features (each distinct instruction encoded once)
    accelerator = _setup(cfg, stage, tiny, run_dir)
    rank, device = accelerator.process_index, accelerator.device
    dataset = dataset if dataset is not None else make_dataset(cfg, stage)
    text_encoder = text_encoder or TextEncoder.from_config(cfg.text_encoder)
    if getattr(dataset, "instructions", None):
        text_encoder.encode(list(dataset.instructions))

    # 2. model, EMA, optimizer, noise
    model, ema, optimizer, start = _run_state(cfg, stage, accelerator, text_encoder.dim,
                                              resume, ckpt_dir)
    noise_scheduler = make_noise_scheduler(cfg.planner.diffusion)
    sampler = StepBatches(len(dataset), t.batch_size, cfg.seed, stage, rank, start)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.workers,
                        persistent_workers=cfg.data.workers > 0)
    if accelerator.is_main_process and t.tensorboard and not tiny:
        accelerator.init_trackers(f"planner-{stage}")

    # 3. the loop (wall time adds up over resumed runs)
    wall0 = checkpoint_state(ckpt_dir).get("wall_seconds", 0.0) if start else 0.0
    clock = _Clock(wall0)
    losses, batches = [], iter(loader)
    bar = tqdm(range(start, max_steps), desc=f"planner {stage}",
               disable=not accelerator.is_main_process)
    for step in bar:
        loss, x0, text, mask = _train_step(cfg, stage, model, ema, optimizer, noise_scheduler,
                                           next(batches), text_encoder, accelerator, step)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if done % t.log_every == 0 or done == max_steps:
            logger.info("%s step=%d loss=%.5f lr=%.2e", stage, done, loss, _lr_at(step, cfg))
            accelerator.log({f"{stage}/loss": loss}, step=done)
        if accelerator.is_main_process and every_sample and done % every_sample == 0:
            write_samples(run_dir / stage / "samples" / f"step{done:07d}.gif", ema.model,
                          stage, cfg, x0, text, mask,
                          2 if tiny else cfg.planner.sampling.num_inference_steps)
        if done % every_ckpt == 0 or done == max_steps:
            _checkpoint(cfg, accelerator, model, ema, optimizer, done, ckpt_dir, run_dir,
                        text_encoder, clock(),
                        export=done == max_steps or done % t.checkpoint_every == 0)
        if callback is not None and callback(done, ema.model):
            if done % every_ckpt:
                _checkpoint(cfg, accelerator, model, ema, optimizer, done, ckpt_dir, run_dir,
                            text_encoder, clock(), export=True)
            max_steps = done
            break

    accelerator.end_training()
    return {"step": max(start, max_steps), "losses": losses, "checkpoint": ckpt_dir,
            "model": accelerator.unwrap_model(model), "ema": ema.model}


def _train_step(cfg, stage, model, ema, optimizer, noise_scheduler, batch, text_encoder,
                accelerator, step):
    video = to_model_space(batch["video"]).to(accelerator.device)
    x0, cond, known = split_clip(video, stage, cfg.planner)
    text, mask = _encode(text_encoder, batch["instruction"], accelerator.device)
    g = torch.Generator().manual_seed(
        step_seed(cfg.seed, stage, accelerator.process_index, step, stream=1))
    for group in optimizer.param_groups:
        group["lr"] = _lr_at(step, cfg)

    with accelerator.autocast():
        loss, _ = diffusion_loss(model, noise_scheduler, x0, cond, text, mask, known,
                                 cfg.planner.diffusion, g)
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"planner stage {stage!r}: non-finite loss {value} "
                                 f"at step {step + 1}")
    accelerator.backward(loss)
    if cfg.planner.train.grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), cfg.planner.train.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ema.update(accelerator.unwrap_model(model), step)
    return value, video, text, mask


class _Clock:
    """Wall seconds of training so far (``start`` from earlier runs) and the hardware."""

    def __init__(self, start: float):
        import time

        self.start, self.t0, self.time = float(start), time.perf_counter(), time.perf_counter

    def __call__(self) -> dict:
        from unipi.model_card import hardware_summary

        return {"wall_seconds": self.start + self.time() - self.t0,
                "hardware": hardware_summary()}


def _checkpoint(cfg, accelerator, model, ema, optimizer, step, ckpt_dir, run_dir,
                text_encoder, extra: dict, export: bool):
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(ckpt_dir, accelerator.unwrap_model(model), ema,
                        optimizer, step, cfg, extra={**extra,
                                                     "processes": accelerator.num_processes})
        if export:
            export_pipeline(run_dir, text_encoder=text_encoder)
    accelerator.wait_for_everyone()
