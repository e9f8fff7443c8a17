"""Train the frame classifier that classifier guidance steers plans with.

    unipi train classifier --config configs/tabletop.yaml --target block_side --colour red
    python -c "from unipi.config import load_config; from unipi.classifier.train import \
train_classifier; train_classifier(load_config('configs/tabletop.yaml'), 'runs/clf')"

Trains on single frames of the demonstrations in ``data.root`` (every
``classifier.frame_every``-th frame of every episode, ``classifier.max_episodes`` at
most), labelled from simulator truth (``unipi.classifier.labels``). Episodes are split
by seed: the last ``classifier.val_fraction`` of them are held out for the accuracy
report. Writes into ``out_dir``::

    labels.npz                   labels of every frame (replaying takes ~0.1 s/episode)
    checkpoint/                  resumable state (unipi.checkpoint), every
                                 classifier.checkpoint_every steps and at the end
    classifier/                  the exported model (FrameClassifier.save_pretrained)
    classifier_metrics.json      held-out accuracy, per class, and the majority baseline

The batch (indices and noise) of step ``s`` is drawn from generators seeded with
``(cfg.seed, s)``, so a stopped and resumed run sees the batches an uninterrupted run
sees.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from unipi.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from unipi.classifier.labels import NO_LABEL, TARGETS, dataset_labels
from unipi.classifier.model import FrameClassifier

logger = logging.getLogger(__name__)


def build_model(cfg) -> FrameClassifier:
    c = cfg.classifier
    target = TARGETS[c.target]
    return FrameClassifier(
        image_size=tuple(cfg.env.image_size), classes=target.classes,
        default_class=target.default_class, target=c.target,
        colour=c.colour if target.needs_colour else "", channels=c.channels, hidden=c.hidden)


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed + stream) * 1_000_003 + step)


def lr_at(step: int, c) -> float:
    """Linear warm-up to ``classifier.lr``, then cosine decay to a tenth of it."""
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = min(1.0, (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps))
    return c.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class LabelledFrames:
    """Frames of some episodes with their labels, as (episode, frame) index pairs.

    ``batch(indices) -> (frames float (B, 3, H, W) in [-1, 1], labels int64 (B,))``.
    """

    def __init__(self, episodes: list, labels: dict[int, np.ndarray], frame_every: int):
        self.episodes = episodes
        items = []
        for e, ep in enumerate(episodes):
            y = labels[ep.record.seed]
            items += [(e, t, y[t]) for t in range(0, len(y), frame_every) if y[t] != NO_LABEL]
        self.items = np.array(items, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.items[np.asarray(indices)]
        frames = np.stack([self.episodes[e].frames[t] for e, t, _ in rows])
        return FrameClassifier.to_model_input(frames), torch.from_numpy(rows[:, 2].copy())


def split_by_seed(episodes: list, val_fraction: float) -> tuple[list, list]:
    """(train, val): the last ``val_fraction`` of the episodes in seed order are val
    (at least one when there are two or more)."""
    ordered = sorted(episodes, key=lambda e: e.record.seed)
    n_val = int(round(len(ordered) * val_fraction))
    n_val = max(n_val, 1) if len(ordered) >= 2 else 0
    return ordered[: len(ordered) - n_val], ordered[len(ordered) - n_val:]


@torch.no_grad()
def evaluate_classifier(model: FrameClassifier, frames: LabelledFrames,
                        batch_size: int = 512) -> dict:
    """Accuracy, per-class accuracy and the majority-class baseline on ``frames``."""
    if len(frames) == 0:
        return {}
    model.eval()
    preds = []
    for start in range(0, len(frames), batch_size):
        x, _ = frames.batch(np.arange(start, min(start + batch_size, len(frames))))
        preds.append(model(x).argmax(-1).cpu())
    model.train()
    pred, true = torch.cat(preds).numpy(), frames.items[:, 2]
    classes = list(model.config.classes)
    counts = np.bincount(true, minlength=len(classes))
    return {
        "accuracy": float((pred == true).mean()),
        "majority_baseline": float(counts.max() / counts.sum()),
        "per_class": {c: float((pred[true == i] == i).mean()) if counts[i] else float("nan")
                      for i, c in enumerate(classes)},
        "class_counts": {c: int(n) for c, n in zip(classes, counts)},
        "num_frames": int(len(true)),
    }


def _datasets(cfg, out_dir: Path, store) -> tuple[LabelledFrames, LabelledFrames]:
    from unipi.data import EpisodeStore

    c = cfg.classifier
    store = store if store is not None else EpisodeStore(cfg.data.root)
    if tuple(store.image_size) != tuple(cfg.env.image_size):
        raise ValueError(f"data.root={str(store.root)!r} holds {list(store.image_size)} frames; "
                         f"env.image_size={list(cfg.env.image_size)}: collect at the planner's "
                         "resolution or change env.image_size")
    episodes = sorted(store.episodes, key=lambda e: e.record.seed)
    episodes = episodes[: c.max_episodes] if c.max_episodes else episodes
    labels = dataset_labels(episodes, TARGETS[c.target], c.colour, out_dir / "labels.npz")
    train_eps, val_eps = split_by_seed(episodes, c.val_fraction)
    train = LabelledFrames(train_eps, labels, c.frame_every)
    if len(train) == 0:
        raise ValueError(f"no labelled training frames for classifier.target={c.target!r} "
                         f"colour={c.colour!r} in {str(store.root)!r} (is there a "
                         f"{c.colour} block in any scene?); collect more episodes")
    return train, LabelledFrames(val_eps, labels, c.frame_every)


def train_classifier(cfg, out_dir: str | os.PathLike, resume: bool = False,
                     max_steps: int | None = None, store=None) -> dict[str, Any]:
    """Train (or resume) the classifier, export it to ``out_dir/classifier``, return metrics.

    Args:
        cfg: the ``ExperimentConfig``; uses ``classifier``, ``env.image_size``,
            ``data.root`` and ``seed``.
        out_dir: run folder (see the module docstring).
        resume: continue from ``out_dir/checkpoint``.
        max_steps: stop once this many steps are done in total (the schedule still
            follows ``classifier.steps``).
        store: an ``EpisodeStore`` to use instead of reading ``data.root``.
    """
    from unipi.config import config_to_dict

    c, out_dir = cfg.classifier, Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    stop = c.steps if max_steps is None else min(c.steps, max_steps)
    train_set, val_set = _datasets(cfg, out_dir, store)

    # 1. model, optimizer, and the checkpoint's state when resuming
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    step = 0
    if resume:
        saved = load_checkpoint(ckpt_dir, model, optimizer)
        _check_resumable(saved, config_to_dict(c), ckpt_dir)
        step = int(saved["step"])
        logger.info(f"resumed classifier from {str(ckpt_dir)!r} at {step=}")
    num_params = sum(p.numel() for p in model.parameters())
    logger.info(f"classifier {c.target} {num_params=:,} train_frames={len(train_set):,} "
                f"val_frames={len(val_set):,}")

    # 2. the loop; batch `s` comes from generators (seed, s)
    state = lambda: {"step": step, "config": config_to_dict(cfg)}  # noqa: E731
    model.train()
    loss_value = float("nan")
    for _ in tqdm(range(step, stop), desc="classifier", leave=False):
        loss_value = _train_step(model, optimizer, train_set, step, cfg)
        step += 1
        if step % c.checkpoint_every == 0 and step < stop:
            save_checkpoint(ckpt_dir, model, optimizer, state())
        if step % 100 == 0:
            logger.info(f"classifier {step=} loss={loss_value:.4f}")
    save_checkpoint(ckpt_dir, model, optimizer, state())

    # 3. export and report held-out accuracy
    model.save_pretrained(out_dir / "classifier")
    val = evaluate_classifier(model, val_set)
    if not val:
        logger.warning("no held-out frames (too few episodes); no accuracy reported")
    metrics = {"step": step, "train_loss": loss_value, "num_params": num_params,
               "target": c.target, "colour": model.config.colour,
               "classes": list(model.config.classes), "val": val}
    atomic_write_bytes(out_dir / "classifier_metrics.json",
                       json.dumps(metrics, indent=2).encode())
    logger.info(f"classifier done {step=} val={val}")
    return metrics


def _check_resumable(state: dict, mine: dict, ckpt_dir: Path) -> None:
    theirs = state.get("config", {}).get("classifier", {})
    keys = ("target", "colour", "channels", "hidden")
    diff = {k: (theirs.get(k), mine[k]) for k in keys if theirs.get(k) != mine[k]}
    if diff:
        raise ValueError(f"checkpoint {str(ckpt_dir)!r} was trained with other classifier "
                         f"settings (checkpoint, now): {diff}; resume with the same settings "
                         "or train into another --out")


def _train_step(model, optimizer, frames: LabelledFrames, step: int, cfg) -> float:
    c = cfg.classifier
    g = _generator(cfg.seed, step, stream=0)
    x, y = frames.batch(torch.randint(len(frames), (c.batch_size,), generator=g).numpy())
    if c.noise_augment > 0:
        noise = _generator(cfg.seed, step, stream=1)
        sigma = torch.rand(len(x), 1, 1, 1, generator=noise) * c.noise_augment
        x = x + sigma * torch.randn(x.shape, generator=noise)
    loss = F.cross_entropy(model(x), y)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"classifier loss is {loss.item()} at {step=}; lower "
                                 f"classifier.lr={c.lr}")
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, c)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())
