"""Behaviour-cloning samples: (recent frames, state, instruction) -> the next actions."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from unipi.data import DatasetFormatError, EpisodeStore


class BCDataset(Dataset):
    """Every step of every usable demonstration, as a BC sample.

    Only episodes of the ``seen`` split are used (the novel combinations stay unseen, as
    for the planner). ``episodes="labelled"`` keeps the episodes that carry action labels;
    ``"all"`` needs every episode to carry them and names the dataset otherwise.
    Episodes are split into ``train`` and ``val`` by seed (the last ``val_fraction`` of
    them in seed order go to ``val``), so no episode is in both.

    Returns dicts ``{"frames": uint8 (history, H, W, 3)`` frames t - history + 1 .. t
    (the first frame repeated before the start), ``"state": float32 (S,)`` at t,
    ``"instruction": str``, ``"actions": float32 (chunk, A)`` actions t .. t + chunk - 1,
    zeros past the episode's end (the arm at rest)``}``.
    """

    def __init__(
        self,
        data: EpisodeStore | str | os.PathLike,
        history: int,
        chunk: int,
        subset: str = "train",
        val_fraction: float = 0.1,
        families: Sequence[str] | None = None,
        episodes: str = "labelled",
    ) -> None:
        if subset not in ("train", "val", "all"):
            raise ValueError(f"subset={subset!r}: expected 'train', 'val' or 'all'")
        if history < 1 or chunk < 1:
            raise ValueError(f"{history=}, {chunk=}: each must be >= 1")
        store = data if isinstance(data, EpisodeStore) else EpisodeStore(
            data, families=families, split="seen")
        chosen = _usable(store, episodes)
        chosen = sorted(chosen, key=lambda ep: ep.record.seed)
        n_val = int(round(len(chosen) * val_fraction))
        if subset == "val":
            chosen = chosen[len(chosen) - n_val:]
        elif subset == "train":
            chosen = chosen[: len(chosen) - n_val] or chosen
        self.episodes, self.history, self.chunk = chosen, history, chunk
        self.items = [(e, t) for e, ep in enumerate(chosen) for t in range(ep.record.length)]

    @property
    def instructions(self) -> list[str]:
        return sorted({ep.record.instruction for ep in self.episodes})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        e, t = self.items[i]
        ep = self.episodes[e]
        idx = np.maximum(np.arange(t - self.history + 1, t + 1), 0)
        actions = np.zeros((self.chunk, ep.actions.shape[1]), dtype=np.float32)
        future = ep.actions[t: t + self.chunk]
        actions[: len(future)] = future
        return {"frames": torch.from_numpy(ep.frames[idx]),
                "state": torch.from_numpy(ep.states[t]),
                "instruction": ep.record.instruction,
                "actions": torch.from_numpy(actions)}


def _usable(store: EpisodeStore, episodes: str) -> list:
    seen = [ep for ep in store.episodes if ep.record.split == "seen"]
    labelled = [ep for ep in seen if ep.actions is not None]
    if episodes == "all" and len(labelled) < len(seen):
        raise DatasetFormatError(
            f"bc.episodes='all' but {len(seen) - len(labelled)} of {len(seen)} episodes "
            f"in {str(store.root)!r} have no action labels; collect the same seeds with "
            "`unipi collect --labelled-fraction 1.0` or use bc.episodes=labelled"
        )
    if episodes not in ("labelled", "all"):
        raise ValueError(f"episodes={episodes!r}: expected 'labelled' or 'all'")
    if not labelled:
        raise DatasetFormatError(
            f"dataset {str(store.root)!r} has no labelled episodes of the seen split; "
            "collect with --labelled-fraction > 0"
        )
    return labelled
