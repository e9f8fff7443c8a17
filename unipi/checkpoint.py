"""Atomic, resumable training checkpoints shared by every training entry point.

A checkpoint is a folder::

    checkpoint/
        model.safetensors       weights being trained
        ema.safetensors         EMA weights (optional)
        optimizer.pt            optimizer state (torch.save, loaded with weights_only=True)
        state.json              step, resolved config, anything JSON
        rng.pt                  python, numpy and torch RNG states (weights_only-safe)

It is written into a temporary sibling folder, flushed, and renamed over the old one,
so a kill at any moment leaves either the previous or the new checkpoint, never a mix.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_dir(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": json.dumps(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
         n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    ema: torch.nn.Module | None = None,
    extra_rng: dict[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint folder atomically; ``state`` must be JSON-able."""

    def write(tmp: Path) -> None:
        save_file(_contiguous(model.state_dict()), tmp / "model.safetensors")
        if ema is not None:
            save_file(_contiguous(ema.state_dict()), tmp / "ema.safetensors")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({**rng_state(), **(extra_rng or {})}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    return atomic_write_dir(path, write)


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: torch.nn.Module | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what ``save_checkpoint`` wrote; returns ``state`` (plus ``"rng"``)."""
    path = Path(path)
    needed = ["model.safetensors", "state.json", "rng.pt"]
    missing = [n for n in needed if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} is incomplete or missing ({', '.join(missing)}); "
            "start without --resume or point to a folder written by a training run"
        )
    model.load_state_dict(load_file(path / "model.safetensors"))
    if ema is not None and (path / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(path / "ema.safetensors"))
    if optimizer is not None and (path / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    rng = torch.load(path / "rng.pt", weights_only=True)
    if restore_rng:
        set_rng_state(rng)
    state["rng"] = rng
    return state


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}
