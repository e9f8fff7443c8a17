"""Reading datasets written by ``unipi collect``: episodes, clips and frame pairs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from unipi.data.format import DatasetFormatError, EpisodeRecord, read_episode, read_info


@dataclass
class Episode:
    record: EpisodeRecord
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    states: np.ndarray  # (T+1, S) float32
    actions: np.ndarray | None  # (T, A) float32, None when unlabelled


class EpisodeStore:
    """All episodes of one dataset folder, loaded into memory on first use.

    Args:
        root: the folder ``unipi collect --out`` wrote.
        families: keep only these families (default: all).
        split: keep only episodes of this split ("seen" or "novel"; None: all).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        families: Sequence[str] | None = None,
        split: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = read_info(self.root)
        self.image_size = tuple(self.info["image_size"])
        paths = sorted((self.root / "episodes").glob("seed_*.parquet"))
        if not paths:
            raise DatasetFormatError(f"dataset {str(self.root)!r} holds no episodes")
        episodes = [Episode(*read_episode(p, self.image_size)) for p in paths]
        self.episodes = [
            e for e in episodes
            if (families is None or e.record.family in families)
            and (split is None or e.record.split == split)
        ]
        if not self.episodes:
            raise DatasetFormatError(
                f"dataset {str(self.root)!r} has no episodes of families={families} "
                f"split={split!r}"
            )

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    @property
    def instructions(self) -> list[str]:
        return sorted({e.record.instruction for e in self.episodes})

    def labelled(self) -> list[Episode]:
        return [e for e in self.episodes if e.actions is not None]


def _as_store(data: EpisodeStore | str | os.PathLike, **kw) -> EpisodeStore:
    return data if isinstance(data, EpisodeStore) else EpisodeStore(data, **kw)


def clip_indices(start: int, num_frames: int, stride: int, length: int) -> np.ndarray:
    """Frame indices start, start+stride, ... clamped to the last frame ``length``."""
    return np.minimum(start + stride * np.arange(num_frames), length)


class ClipDataset(Dataset):
    """Clips of ``num_frames`` frames, ``stride`` env steps apart, for the planner.

    Item ``i`` is a fixed (episode, start) pair, so shuffling is up to the sampler and
    a seeded sampler gives the same batches. Starts run over every ``start_every``-th
    step of each episode, below ``max_start`` if given; frames past the end repeat the
    last one (the scene at rest).

    Returns dicts ``{"video": uint8 (F, H, W, 3), "instruction": str}``.
    """

    def __init__(
        self,
        data: EpisodeStore | str | os.PathLike,
        num_frames: int,
        stride: int,
        families: Sequence[str] | None = None,
        split: str | None = "seen",
        start_every: int = 1,
        max_start: int | None = None,
    ) -> None:
        if num_frames < 1 or stride < 1 or start_every < 1:
            raise ValueError(f"{num_frames=}, {stride=}, {start_every=}: each must be >= 1")
        if max_start is not None and max_start < 1:
            raise ValueError(f"{max_start=}: must be >= 1 (None: every step)")
        self.store = _as_store(data, families=families, split=split)
        self.num_frames, self.stride = num_frames, stride
        self.items = [
            (e, t)
            for e, ep in enumerate(self.store.episodes)
            for t in range(0, min(ep.record.length, max_start or ep.record.length), start_every)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        e, start = self.items[i]
        ep = self.store.episodes[e]
        idx = clip_indices(start, self.num_frames, self.stride, ep.record.length)
        return {"video": torch.from_numpy(ep.frames[idx]), "instruction": ep.record.instruction}


class PairDataset(Dataset):
    """Labelled frame pairs for inverse dynamics: (frame t, frame t+stride) -> actions.

    Only episodes with action labels are used. Episodes are split into ``train`` and
    ``val`` by seed (every episode whose position in seed order falls in the last
    ``val_fraction`` goes to ``val``), so no episode is in both.

    Returns dicts ``{"frames": uint8 (2, H, W, 3), "actions": float32 (stride, A)}``;
    actions past the end of the episode are zeros (the arm at rest).
    """

    def __init__(
        self,
        data: EpisodeStore | str | os.PathLike,
        stride: int,
        subset: str = "train",
        val_fraction: float = 0.1,
        families: Sequence[str] | None = None,
    ) -> None:
        if subset not in ("train", "val", "all"):
            raise ValueError(f"subset={subset!r}: expected 'train', 'val' or 'all'")
        if stride < 1:
            raise ValueError(f"stride={stride}: must be >= 1")
        store = _as_store(data, families=families, split=None)
        labelled = sorted(store.labelled(), key=lambda ep: ep.record.seed)
        if not labelled:
            raise DatasetFormatError(
                f"dataset {str(store.root)!r} has no labelled episodes; collect with "
                "--labelled-fraction > 0"
            )
        n_val = int(round(len(labelled) * val_fraction))
        if subset == "val":
            labelled = labelled[len(labelled) - n_val:]
        elif subset == "train":
            labelled = labelled[: len(labelled) - n_val] or labelled
        self.episodes, self.stride = labelled, stride
        self.items = [(e, t) for e, ep in enumerate(labelled) for t in range(ep.record.length)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        e, t = self.items[i]
        ep = self.episodes[e]
        T = ep.record.length
        frames = ep.frames[[t, min(t + self.stride, T)]]
        actions = np.zeros((self.stride, ep.actions.shape[1]), dtype=np.float32)
        chunk = ep.actions[t: t + self.stride]
        actions[: len(chunk)] = chunk
        return {"frames": torch.from_numpy(frames), "actions": torch.from_numpy(actions)}
