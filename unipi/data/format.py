"""The on-disk episode format, ``unipi-episodes`` version 1.

A dataset is a folder::

    DIR/
        meta/info.json                 format name and version, image size, action size,
                                       families, labelled fraction, seed offset
        episodes/seed_00000042.parquet one file per kept (successful) episode
        failed/seed_00000043.json      one marker per discarded (unsuccessful) seed

Each episode file is an Apache Parquet table with one row per observation, in order:

    frame_index  int32
    image        binary      uint8 (H, W, 3), C order, the camera image at that step
    state        list<f32>   proprioception (end-effector xyz, gripper)
    action       list<f32>   the action taken after this observation; null on the last
                             row, and on every row of an episode without action labels

and the episode's record (seed, family, instruction, split, success, labelled, length)
as JSON under the schema metadata key ``unipi.episode``. Frame t is the observation
before action t, so an episode of T actions has T + 1 rows. Files are written to a
temporary name and renamed, so a killed collection never leaves half an episode.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from unipi.checkpoint import atomic_write_bytes

FORMAT_NAME = "unipi-episodes"
FORMAT_VERSION = 1
EPISODE_KEY = b"unipi.episode"


class DatasetFormatError(ValueError):
    """A dataset folder or file that is not (or no longer) what the format promises."""


@dataclass
class EpisodeRecord:
    seed: int
    family: str
    instruction: str
    split: str
    success: bool
    labelled: bool
    length: int  # number of actions T; the episode has T + 1 frames


def episode_path(root: Path, seed: int) -> Path:
    return root / "episodes" / f"seed_{seed:08d}.parquet"


def failed_path(root: Path, seed: int) -> Path:
    return root / "failed" / f"seed_{seed:08d}.json"


def write_info(root: Path, info: dict) -> None:
    info = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **info}
    atomic_write_bytes(root / "meta" / "info.json", json.dumps(info, indent=2).encode())


def read_info(root: Path) -> dict:
    """Read ``meta/info.json``; refuse folders of another format or version."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DatasetFormatError(
            f"{str(root)!r} is not a unipi dataset: {str(path)!r} is missing "
            "(write one with `unipi collect --out DIR`)"
        )
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{str(path)!r} is corrupt: {err}") from err
    if info.get("format") != FORMAT_NAME or info.get("version") != FORMAT_VERSION:
        raise DatasetFormatError(
            f"{str(root)!r} holds format {info.get('format')!r} version "
            f"{info.get('version')!r}; this reader accepts {FORMAT_NAME!r} "
            f"version {FORMAT_VERSION}"
        )
    return info


def write_episode(
    root: Path,
    record: EpisodeRecord,
    frames: np.ndarray,
    states: np.ndarray,
    actions: np.ndarray | None,
) -> Path:
    """Write one episode atomically. frames (T+1, H, W, 3) uint8, actions (T, A)."""
    n = len(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T+1, H, W, 3), got {frames.dtype} {frames.shape}")
    if record.length != n - 1 or len(states) != n:
        raise ValueError(f"episode seed={record.seed}: {n} frames, {len(states)} states, "
                         f"length={record.length}")
    action_col: list = [None] * n
    if actions is not None:
        if len(actions) != n - 1:
            raise ValueError(f"episode seed={record.seed}: {len(actions)} actions for {n} frames")
        action_col = [a.astype(np.float32).tolist() for a in actions] + [None]
    table = pa.table(
        {
            "frame_index": pa.array(np.arange(n, dtype=np.int32)),
            "image": pa.array([f.tobytes() for f in frames], type=pa.binary()),
            "state": pa.array([s.astype(np.float32).tolist() for s in states],
                              type=pa.list_(pa.float32())),
            "action": pa.array(action_col, type=pa.list_(pa.float32())),
        }
    )
    meta = {EPISODE_KEY: json.dumps(asdict(record)).encode()}
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    path = episode_path(root, record.seed)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def read_episode(
    path: Path, image_size: tuple[int, int]
) -> tuple[EpisodeRecord, np.ndarray, np.ndarray, np.ndarray | None]:
    """Read one episode file; a corrupt or truncated file raises naming the path."""
    try:
        table = pq.read_table(path)
        record = EpisodeRecord(**json.loads(table.schema.metadata[EPISODE_KEY]))
    except Exception as err:  # pyarrow raises several types for damaged files
        raise DatasetFormatError(f"episode file {str(path)!r} is corrupt or truncated: {err}") \
            from err
    h, w = image_size
    images = table.column("image").to_pylist()
    if len(images) != record.length + 1 or any(len(b) != h * w * 3 for b in images):
        raise DatasetFormatError(
            f"episode file {str(path)!r} does not match its record "
            f"({len(images)} frames for length {record.length}, image size {h}x{w})"
        )
    frames = np.frombuffer(b"".join(images), dtype=np.uint8).reshape(-1, h, w, 3)
    states = np.asarray(table.column("state").to_pylist(), dtype=np.float32)
    actions = None
    if record.labelled:
        col = table.column("action").to_pylist()[:-1]
        actions = np.asarray(col, dtype=np.float32)
    return record, frames, states, actions
