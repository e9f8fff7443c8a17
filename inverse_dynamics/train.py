"""Train the inverse-dynamics model on the labelled demonstrations.

    unipi train idm --config configs/tabletop.yaml --out runs/idm
    python -c "from unipi.config import load_config; from inverse_dynamics.train import \
train_idm; train_idm(load_config('configs/tabletop.yaml'), 'runs/idm')"

Writes into ``out_dir``::

    checkpoint/          resumable state (unipi.checkpoint), every idm.checkpoint_every
                         steps and at the end of every run
    idm/                 the exported model (InverseDynamicsModel.save_pretrained)
    idm_metrics.json     held-out action error of the exported model

The batch of step ``s`` is drawn from a generator seeded with ``(cfg.seed, s)``, so a
run that is stopped and resumed sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from inverse_dynamics.model import InverseDynamicsModel
from unipi.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from unipi.model_card import hardware_summary

logger = logging.getLogger(__name__)


def idm_chunk(cfg) -> int:
    """Env steps between two consecutive planned frames (= actions per IDM call)."""
    stride, factor = cfg.planner.frame_stride, cfg.planner.tsr_factor
    if stride % factor != 0:
        raise ValueError(
            f"planner.frame_stride={stride} is not divisible by planner.tsr_factor={factor};"
            " the IDM needs a whole number of env steps between planned frames"
        )
    return stride // factor


def build_model(cfg) -> InverseDynamicsModel:
    return InverseDynamicsModel(
        chunk=idm_chunk(cfg), action_dim=4, channels=cfg.idm.channels,
        hidden=cfg.idm.hidden, use_difference=cfg.idm.use_difference,
    )


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class _StepBatches(torch.utils.data.Sampler):
    """Index lists for steps ``start .. stop - 1``, each drawn from its own seed."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop

    def __iter__(self):
        for step in range(self.start, self.stop):
            g = _step_generator(self.seed, step)
            yield torch.randint(self.n, (self.batch_size,), generator=g).tolist()

    def __len__(self) -> int:
        return self.stop - self.start


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each pair by up to ``pad`` pixels (the same shift for both frames).

    ``frames: (B, 2, H, W, 3)`` uint8; edges are repeated into the gap.
    """
    if pad == 0:
        return frames
    B, _, H, W, _ = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(B, 6, H, W).float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator)
    out = torch.stack(
        [x[i, :, dy:dy + H, dx:dx + W] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    return out.reshape(B, 2, 3, H, W).permute(0, 1, 3, 4, 2).to(torch.uint8)


def lr_at(step: int, cfg) -> float:
    """Linear warm-up to ``idm.lr``, then cosine decay to a tenth of it at ``idm.steps``."""
    c = cfg.idm
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = min(1.0, (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps))
    return c.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def action_stats(dataset: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of every action the dataset yields."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    actions = torch.cat([b["actions"].reshape(-1, b["actions"].shape[-1]) for b in loader])
    return actions.mean(0), actions.std(0)


@torch.no_grad()
def evaluate_idm(model: InverseDynamicsModel, dataset: Dataset, batch_size: int = 256) -> dict:
    """Held-out action error in env units.

    Returns ``mse`` and ``mae`` over every action value, ``mse_per_dim`` (dx, dy, dz,
    gripper), ``baseline_mse`` (predicting
    the training mean), and ``gripper_sign_acc`` over steps whose true gripper command
    is non-zero (zero is the padding past an episode's end).
    """
    model.eval()
    sq, ab, base, n = 0.0, 0.0, 0.0, 0
    sq_dim = torch.zeros(model.config.action_dim)
    grip_ok, grip_n = 0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        true = batch["actions"].float()  # (B, chunk, A)
        pred = model.unnormalize(model(batch["frames"])).clamp(-1, 1).cpu()
        sq += float(((pred - true) ** 2).sum())
        sq_dim += ((pred - true) ** 2).sum(dim=(0, 1))
        ab += float((pred - true).abs().sum())
        base += float(((model.action_mean.cpu() - true) ** 2).sum())
        n += true.numel()
        moving = true[..., -1] != 0
        grip_ok += int((torch.sign(pred[..., -1]) == torch.sign(true[..., -1]))[moving].sum())
        grip_n += int(moving.sum())
    model.train()
    if n == 0:
        return {}
    return {
        "mse": sq / n, "mae": ab / n, "baseline_mse": base / n,
        "mse_per_dim": (sq_dim / (n // model.config.action_dim)).tolist(),
        "gripper_sign_acc": grip_ok / grip_n if grip_n else float("nan"),
        "num_pairs": len(dataset),
    }


def _default_datasets(cfg) -> tuple[Dataset, Dataset]:
    from unipi.data import PairDataset

    stride = idm_chunk(cfg)
    kw = dict(stride=stride, val_fraction=cfg.idm.val_fraction)
    return PairDataset(cfg.data.root, subset="train", **kw), PairDataset(
        cfg.data.root, subset="val", **kw
    )


def train_idm(
    cfg,
    out_dir: str | os.PathLike,
    resume: bool = False,
    max_steps: int | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the IDM, export it to ``out_dir/idm`` and return its metrics.

    Args:
        cfg: the ``ExperimentConfig``; uses ``idm``, ``planner`` (chunk), ``data.root``
            and ``seed``.
        out_dir: run folder (see the module docstring).
        resume: continue from ``out_dir/checkpoint``.
        max_steps: stop once this many steps are done in total (the schedule still
            follows ``idm.steps``); for smoke tests and for splitting a run.
        datasets: (train, val) datasets to use instead of ``PairDataset`` over
            ``cfg.data.root``; items as PairDataset's.
    """
    from unipi.config import config_to_dict

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    train_set, val_set = datasets if datasets is not None else _default_datasets(cfg)
    stop = cfg.idm.steps if max_steps is None else min(cfg.idm.steps, max_steps)

    # 1. model, optimizer, and either fresh statistics or the checkpoint's state
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.idm.lr, weight_decay=cfg.idm.weight_decay
    )
    wall0 = 0.0
    if resume and ckpt_dir.is_dir():
        state0 = load_checkpoint(ckpt_dir, model, optimizer)
        step, wall0 = int(state0["step"]), float(state0.get("wall_seconds", 0.0))
        logger.info(f"resumed IDM from {str(ckpt_dir)!r} at {step=}")
    else:
        if resume:
            logger.info(f"resume: no checkpoint at {str(ckpt_dir)!r}; starting at step 0")
        step = 0
        model.set_action_stats(*action_stats(train_set))
    t0 = time.perf_counter()
    num_params = model.num_parameters()
    logger.info(f"IDM {num_params=:,} chunk={model.config.chunk} train_pairs={len(train_set):,}")

    # 2. the loop; batch `s` comes from generator (seed, s)
    sampler = _StepBatches(len(train_set), cfg.idm.batch_size, cfg.seed, step, stop)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.idm.workers)
    state = lambda: {"step": step, "config": config_to_dict(cfg),  # noqa: E731
                     "wall_seconds": wall0 + time.perf_counter() - t0,
                     "hardware": hardware_summary()}
    model.train()
    loss_value = float("nan")
    for batch in tqdm(loader, total=len(sampler), initial=0, desc="idm", leave=False):
        loss_value = _train_step(model, optimizer, batch, step, cfg)
        step += 1
        if step % cfg.idm.checkpoint_every == 0 and step < stop:
            save_checkpoint(ckpt_dir, model, optimizer, state())
        if step % 100 == 0:
            logger.info(f"idm {step=} loss={loss_value:.4f}")
    save_checkpoint(ckpt_dir, model, optimizer, state())

    # 3. export and report held-out error
    model.save_pretrained(out_dir / "idm")
    metrics = {"step": step, "train_loss": loss_value, "num_params": num_params,
               "train_pairs": len(train_set), "wall_seconds": state()["wall_seconds"],
               "hardware": hardware_summary()}
    val = evaluate_idm(model, val_set) if len(val_set) else {}
    if not val:
        logger.warning("no validation pairs (too few labelled episodes); no action error")
    metrics["val"] = val
    atomic_write_bytes(out_dir / "idm_metrics.json", json.dumps(metrics, indent=2).encode())
    logger.info(f"IDM done {step=} val={val}")
    return metrics


def _train_step(model, optimizer, batch: dict, step: int, cfg) -> float:
    g = _step_generator(cfg.seed + 1, step)
    frames = random_shift(batch["frames"], cfg.idm.shift_augment, g)
    target = model.normalize(batch["actions"].float())
    loss = F.mse_loss(model(frames), target)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"IDM loss is {loss.item()} at {step=}; lower idm.lr={cfg.idm.lr} or check the data"
        )
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.idm.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.idm.grad_clip)
    optimizer.step()
    return float(loss.item())
