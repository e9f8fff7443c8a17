"""Moving squares: a synthetic clip dataset for tests, benchmarks and sanity checks.

Each clip shows one coloured square on a grey table moving a fixed number of pixels
per frame in the direction its instruction names ("move the square left"). Items
have the format of ``unipi.data.ClipDataset``: ``{"video": uint8 (F, H, W, 3),
"instruction": str}``, and item i is the same every time it is read.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)
BACKGROUND = 128


def instruction_for(direction: str) -> str:
    return f"move the square {direction}"


class MovingSquares(Dataset):
    def __init__(self, size: int = 10_000, image_size: int = 16, num_frames: int = 4,
                 square: int = 3, speed: int = 2, seed: int = 0):
        self.size, self.image_size, self.num_frames = size, image_size, num_frames
        self.square, self.speed, self.seed = square, speed, seed
        self.directions = list(DIRECTIONS)
        self.instructions = [instruction_for(d) for d in self.directions]
        travel = speed * (num_frames - 1)
        if travel + square > image_size:
            raise ValueError(f"a square of {square} px moving {travel} px leaves "
                             f"a {image_size} px frame")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        direction = self.directions[int(i) % 4]
        dy, dx = DIRECTIONS[direction]
        n, s, travel = self.image_size, self.square, self.speed * (self.num_frames - 1)

        def start(d: int) -> int:  # room to travel along a moving axis
            lo, hi = (travel, n - s) if d < 0 else (0, n - s - travel)
            return int(rng.integers(lo, hi + 1))

        y, x = start(dy), start(dx)
        colour = rng.integers(0, 256, size=3)
        colour[rng.integers(3)] = 255  # keep it distinct from the grey table
        video = np.full((self.num_frames, n, n, 3), BACKGROUND, dtype=np.uint8)
        for f in range(self.num_frames):
            yy, xx = y + dy * self.speed * f, x + dx * self.speed * f
            video[f, yy : yy + s, xx : xx + s] = colour
        return {"video": torch.from_numpy(video), "instruction": instruction_for(direction)}


def square_centroid(frame: np.ndarray, threshold: int = 40) -> np.ndarray | None:
    """(y, x) centre of the pixels that differ from the table, or None if there are none."""
    moved = np.abs(frame.astype(int) - BACKGROUND).max(axis=-1) > threshold
    if not moved.any():
        return None
    ys, xs = np.nonzero(moved)
    return np.array([ys.mean(), xs.mean()])


def moved_as_told(video: np.ndarray, direction: str, min_shift: float = 1.0) -> bool:
    """Whether the square's centroid in the last frame moved ``direction`` from frame 0
    by at least ``min_shift`` pixels, more along that axis than across it."""
    a, b = square_centroid(video[0]), square_centroid(video[-1])
    if a is None or b is None:
        return False
    dy, dx = DIRECTIONS[direction]
    shift = b - a
    along = shift[0] * dy + shift[1] * dx
    across = abs(shift[1] * dy + shift[0] * dx)
    return along >= min_shift and along > across
