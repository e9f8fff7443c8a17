"""Train the behaviour-cloning baseline on the demonstrations that carry actions.

    unipi train bc --config configs/tabletop.yaml --out runs/bc
    unipi eval --model runs/bc --episodes 50        # the run folder is a model folder

Writes into ``out_dir``::

    checkpoint/          resumable state (unipi.checkpoint), every bc.checkpoint_every
                         steps and at the end of every run
    bc/                  the exported policy (BCPolicy.save_pretrained, with statistics)
    config.json          the resolved ExperimentConfig: with bc/ this makes ``out_dir`` a
                         model folder that ``unipi eval --model`` runs as a BC agent
    bc_metrics.json      held-out action error and the budget (steps, data, wall time)

The batch of step ``s`` is drawn from a generator seeded with ``(cfg.seed, s)``, and the
augmentation and dropout of step ``s`` from seeds of their own, so a run that is stopped
and resumed computes exactly what an uninterrupted run computes. The schedule (linear
warm-up, cosine decay to a tenth) and the checkpoint rules are the IDM's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from inverse_dynamics.train import _step_generator, _StepBatches, lr_at
from unipi.baselines.bc import BCPolicy, build_policy
from unipi.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


def shift_frames(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each item by up to ``pad`` pixels, the same shift for all its frames.

    ``frames: (B, T, H, W, 3)`` uint8; edges are repeated into the gap.
    """
    if pad == 0:
        return frames
    B, T, H, W, _ = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(B, T * 3, H, W).float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator)
    out = torch.stack(
        [x[i, :, dy:dy + H, dx:dx + W] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    return out.reshape(B, T, 3, H, W).permute(0, 1, 3, 4, 2).to(torch.uint8)


@torch.no_grad()
def data_stats(dataset: Dataset, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per-dimension mean and std of every action and state the dataset yields."""
    actions, states = [], []
    for b in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        actions.append(b["actions"].reshape(-1, b["actions"].shape[-1]))
        states.append(b["state"])
    a, s = torch.cat(actions), torch.cat(states)
    return {"action_mean": a.mean(0), "action_std": a.std(0),
            "state_mean": s.mean(0), "state_std": s.std(0)}


def _text(text_encoder, instructions) -> tuple[torch.Tensor, torch.Tensor]:
    return text_encoder.encode(list(instructions))


@torch.no_grad()
def evaluate_bc(policy: BCPolicy, dataset: Dataset, text_encoder, batch_size: int = 256
                ) -> dict:
    """Held-out action error in env units over every predicted chunk.

    Returns ``mse`` and ``mae`` over every action value, ``mse_per_dim`` (dx, dy, dz,
    gripper), ``first_mse`` (the first action of each chunk, the one always executed),
    ``baseline_mse`` (predicting the training mean action), and ``gripper_sign_acc``
    over steps whose true suction command is non-zero (zero is the padding past an end).
    """
    policy.eval()
    sq, ab, base, first, n, n_first = 0.0, 0.0, 0.0, 0.0, 0, 0
    sq_dim = torch.zeros(policy.config.action_dim)
    grip_ok, grip_n = 0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        true = batch["actions"].float()  # (B, chunk, A)
        text, mask = _text(text_encoder, batch["instruction"])
        out = policy(batch["frames"], text, mask, batch["state"])
        pred = policy.unnormalize(out).clamp(-1, 1).cpu()
        err = (pred - true) ** 2
        sq, sq_dim = sq + float(err.sum()), sq_dim + err.sum(dim=(0, 1))
        first, n_first = first + float(err[:, 0].sum()), n_first + err[:, 0].numel()
        ab += float((pred - true).abs().sum())
        base += float(((policy.action_mean.cpu() - true) ** 2).sum())
        n += true.numel()
        moving = true[..., -1] != 0
        grip_ok += int((torch.sign(pred[..., -1]) == torch.sign(true[..., -1]))[moving].sum())
        grip_n += int(moving.sum())
    policy.train()
    if n == 0:
        return {}
    return {
        "mse": sq / n, "mae": ab / n, "baseline_mse": base / n, "first_mse": first / n_first,
        "mse_per_dim": (sq_dim / (n // policy.config.action_dim)).tolist(),
        "gripper_sign_acc": grip_ok / grip_n if grip_n else float("nan"),
        "num_samples": len(dataset),
    }


def _default_datasets(cfg) -> tuple[Dataset, Dataset]:
    from unipi.baselines.data import BCDataset
    from unipi.data import EpisodeStore

    store = EpisodeStore(cfg.data.root, families=list(cfg.env.families), split="seen")
    kw = dict(history=cfg.bc.history, chunk=cfg.bc.chunk, val_fraction=cfg.bc.val_fraction,
              episodes=cfg.bc.episodes)
    return BCDataset(store, subset="train", **kw), BCDataset(store, subset="val", **kw)


def _data_budget(train_set, val_set) -> dict:
    def count(ds):
        return len(getattr(ds, "episodes", ())) or None

    return {"train_episodes": count(train_set), "val_episodes": count(val_set),
            "train_samples": len(train_set), "val_samples": len(val_set)}


def train_bc(
    cfg,
    out_dir: str | os.PathLike,
    resume: bool = False,
    max_steps: int | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
    text_encoder=None,
) -> dict[str, Any]:
    """Train (or resume) the BC policy, export it to ``out_dir`` and return its metrics.

    Args:
        cfg: the ``ExperimentConfig``; uses ``bc``, ``env.image_size``, ``text_encoder``,
            ``data.root`` and ``seed``.
        out_dir: run folder (see the module docstring).
        resume: continue from ``out_dir/checkpoint``.
        max_steps: stop once this many steps are done in total (the schedule still
            follows ``bc.steps``); for smoke tests and for splitting a run.
        datasets: (train, val) datasets to use instead of ``BCDataset`` over
            ``cfg.data.root``; items as BCDataset's.
        text_encoder: a ``TextEncoder`` to reuse (default: built from ``cfg``).
    """
    from unipi.config import config_to_dict
    from unipi.planner.text import TextEncoder

    c = cfg.bc
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    stop = c.steps if max_steps is None else min(c.steps, max_steps)

    # 1. data and the frozen instruction features (each distinct instruction once)
    train_set, val_set = datasets if datasets is not None else _default_datasets(cfg)
    text_encoder = text_encoder or TextEncoder.from_config(cfg.text_encoder)
    for ds in (train_set, val_set):
        if getattr(ds, "instructions", None):
            text_encoder.encode(list(ds.instructions))

    # 2. policy, optimizer, and either fresh statistics or the checkpoint's state
    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, text_encoder.dim)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    wall = 0.0
    if resume:
        saved = load_checkpoint(ckpt_dir, policy, optimizer)
        step, wall = int(saved["step"]), float(saved.get("wall_time", 0.0))
        logger.info(f"resumed BC from {str(ckpt_dir)!r} at {step=}")
    else:
        step = 0
        policy.set_stats(**data_stats(train_set))
    num_params = policy.num_parameters()
    logger.info(f"BC {num_params=:,} chunk={c.chunk} history={c.history} "
                f"use_state={c.use_state} train_samples={len(train_set):,}")

    # 3. the loop; batch `s` comes from generator (seed, s)
    sampler = _StepBatches(len(train_set), c.batch_size, cfg.seed, step, stop)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=c.workers)
    started = time.perf_counter()
    state = lambda: {"step": step, "config": config_to_dict(cfg),  # noqa: E731
                     "wall_time": wall + time.perf_counter() - started}
    policy.train()
    loss_value = float("nan")
    for batch in tqdm(loader, total=len(sampler), desc="bc", leave=False):
        loss_value = _train_step(policy, optimizer, batch, step, cfg, text_encoder)
        step += 1
        if step % c.checkpoint_every == 0 and step < stop:
            save_checkpoint(ckpt_dir, policy, optimizer, state())
        if step % c.log_every == 0:
            logger.info(f"bc {step=} loss={loss_value:.4f} lr={lr_at(step - 1, _sched(c)):.2e}")
    final = state()
    save_checkpoint(ckpt_dir, policy, optimizer, final)

    # 4. export as a model folder and report held-out error and the budget
    return _export(cfg, out_dir, policy, text_encoder, train_set, val_set, final, loss_value)


def _export(cfg, out_dir, policy, text_encoder, train_set, val_set, final, loss) -> dict:
    from unipi.config import config_to_dict

    policy.save_pretrained(out_dir / "bc")
    atomic_write_bytes(out_dir / "config.json",
                       json.dumps(config_to_dict(cfg), indent=2).encode())
    val = evaluate_bc(policy, val_set, text_encoder) if len(val_set) else {}
    if not val:
        logger.warning("no validation samples (too few usable episodes); no action error")
    metrics = {
        "step": final["step"], "train_loss": loss, "num_params": policy.num_parameters(),
        "val": val,
        "budget": {"steps": final["step"], "batch_size": cfg.bc.batch_size,
                   "wall_time": final["wall_time"], "torch_threads": torch.get_num_threads(),
                   "episodes": cfg.bc.episodes, **_data_budget(train_set, val_set)},
    }
    atomic_write_bytes(out_dir / "bc_metrics.json", json.dumps(metrics, indent=2).encode())
    logger.info(f"BC done step={final['step']} val={val}")
    return metrics


def _sched(c) -> SimpleNamespace:
    return SimpleNamespace(idm=c)  # lr_at reads lr, warmup_steps, steps of cfg.idm


def _train_step(policy, optimizer, batch: dict, step: int, cfg, text_encoder) -> float:
    c = cfg.bc
    frames = shift_frames(batch["frames"], c.shift_augment, _step_generator(cfg.seed + 1, step))
    torch.manual_seed(_step_generator(cfg.seed + 2, step).initial_seed())  # dropout of step
    text, mask = _text(text_encoder, batch["instruction"])
    target = policy.normalize(batch["actions"].float())
    loss = F.mse_loss(policy(frames, text, mask, batch["state"]), target)
    if not math.isfinite(loss.item()):
        raise FloatingPointError(
            f"BC loss is {loss.item()} at {step=}; lower bc.lr={c.lr} or check the data"
        )
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, _sched(c))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if c.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(policy.parameters(), c.grad_clip)
    optimizer.step()
    return float(loss.item())
