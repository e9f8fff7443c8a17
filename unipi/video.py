"""Writing videos people look at: mp4 (through imageio's ffmpeg) and gif."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import numpy as np


def upscale(frames: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of uint8 (..., H, W, 3) so that H becomes >= ``size``."""
    k = max(1, -(-size // frames.shape[-3]))
    return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def side_by_side(videos: Sequence[np.ndarray], size: int = 128, gap: int = 4) -> np.ndarray:
    """Put (T_i, H, W, 3) videos next to each other, padding shorter ones with their last
    frame and upscaling each to ``size`` pixels high. Returns (T, size, W_total, 3)."""
    t = max(len(v) for v in videos)
    cols = []
    for v in videos:
        v = upscale(np.asarray(v, dtype=np.uint8), size)
        if len(v) < t:
            v = np.concatenate([v, np.repeat(v[-1:], t - len(v), axis=0)])
        cols += [v, np.full((t, v.shape[1], gap, 3), 255, np.uint8)]
    return np.concatenate(cols[:-1], axis=2)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 4.0) -> Path:
    """Write uint8 (T, H, W, 3) frames as .mp4 (H.264) or .gif, chosen by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    elif path.suffix == ".mp4":
        # libx264 wants even sides; pad by repeating the last row/column
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        iio.imwrite(path, frames, extension=".mp4", fps=fps, codec="libx264",
                    plugin="FFMPEG", macro_block_size=1)
    else:
        raise ValueError(f"{str(path)!r}: video files must end in .mp4 or .gif")
    return path

