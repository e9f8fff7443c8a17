"""Collect Meta-World scripted-policy demonstrations into a dataset folder.

    unipi collect --env metaworld --episodes-per-task 15 --image-size 64x64 \
        --labelled-fraction 1.0 --workers 2 --out data/metaworld_avdc

The folder has the format of ``unipi.data.format`` (family "metaworld", split "seen",
instruction = the task in words). Each task's episodes are spread evenly over the
cameras; every episode runs exactly ``episode_steps`` steps (128 by default: the
scripted policies succeed after 20-125 steps, then the hand holds still) and is kept
when ``info["success"]`` came at some step, the protocol's criterion (handle-press
passes its goal rather than resting there). Seeds come from the training range
(``unipi.seeds``) and encode the task and camera, ``collect_seed(task, camera, i)``, so
a folder can be resumed, and a seed read from any episode file tells what it shows.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from unipi.checkpoint import atomic_write_bytes
from unipi.data.collect import is_labelled
from unipi.data.format import (
    DatasetFormatError,
    EpisodeRecord,
    failed_path,
    read_info,
    write_episode,
    write_info,
)
from unipi.seeds import TRAIN_SEED_START, train_seed

log = logging.getLogger(__name__)

FAMILY = "metaworld"
TASK_SEED_STRIDE = 300_000  # seeds per task: 11 tasks fill 3.3 M of the 10 M range
CAMERA_SEED_STRIDE = 100_000  # seeds per (task, camera)
EPISODE_STEPS = 128
MAX_ATTEMPTS_FACTOR = 10  # give up on a (task, camera) after this many tries per episode


def collect_seed(task: str, camera: str, index: int, offset: int = 0) -> int:
    """Training seed of the ``index``-th attempt of (task, camera)."""
    from envs.metaworld import CAMERAS, TASK_NAMES, check_camera, task_name

    if not 0 <= index < CAMERA_SEED_STRIDE:
        raise ValueError(f"attempt index {index} must be in [0, {CAMERA_SEED_STRIDE})")
    t, c = TASK_NAMES.index(task_name(task)), CAMERAS.index(check_camera(camera))
    return train_seed(TASK_SEED_STRIDE * t + CAMERA_SEED_STRIDE * c + index, offset)


def decode_seed(seed: int, offset: int = 0) -> tuple[str, str, int]:
    """(task, camera, attempt index) of a seed made by ``collect_seed``."""
    from envs.metaworld import CAMERAS, TASK_NAMES

    rest = seed - TRAIN_SEED_START - offset
    t, rest = divmod(rest, TASK_SEED_STRIDE)
    c, index = divmod(rest, CAMERA_SEED_STRIDE)
    if not (0 <= t < len(TASK_NAMES) and 0 <= c < len(CAMERAS)):
        raise ValueError(f"seed {seed} (offset {offset}) is no Meta-World collection seed")
    return TASK_NAMES[t], CAMERAS[c], index


def camera_quota(episodes_per_task: int, cameras: Sequence[str]) -> dict[str, int]:
    """Episodes per camera: an even split, the first cameras taking the remainder."""
    n, k = divmod(episodes_per_task, len(cameras))
    return {cam: n + (i < k) for i, cam in enumerate(cameras)}


@dataclass(frozen=True)
class MetaWorldCollectSpec:
    tasks: tuple[str, ...]
    cameras: tuple[str, ...]
    image_size: tuple[int, int]
    episode_steps: int
    labelled_fraction: float
    seed_offset: int = 0

    def info(self) -> dict:
        """The settings a folder is tied to (``meta/info.json``)."""
        return {
            "image_size": list(self.image_size), "action_dim": 4, "state_dim": 4,
            "families": [FAMILY], "episode_steps": self.episode_steps,
            "labelled_fraction": self.labelled_fraction, "split": "seen",
            "seed_offset": self.seed_offset, "tasks": list(self.tasks),
            "cameras": list(self.cameras),
            "seed_layout": {"task_stride": TASK_SEED_STRIDE,
                            "camera_stride": CAMERA_SEED_STRIDE},
        }


_WORKER_ENVS: dict = {}


def _worker_env(task: str, camera: str, image_size: tuple[int, int]):
    key = (task, camera, image_size)
    if key not in _WORKER_ENVS:
        from envs.metaworld import make_metaworld_env

        _WORKER_ENVS[key] = make_metaworld_env(task, camera, image_size=image_size)
    return _WORKER_ENVS[key]


def _run_seed(args: tuple[int, MetaWorldCollectSpec]) -> tuple[int, dict]:
    """One scripted episode in a worker: (seed, episode dict of run_expert_episode)."""
    seed, spec = args
    from envs.metaworld_expert import run_expert_episode

    task, camera, _ = decode_seed(seed, spec.seed_offset)
    env = _worker_env(task, camera, spec.image_size)
    return seed, run_expert_episode(env, seed, max_steps=spec.episode_steps)


def _check_out_dir(out: Path, spec: MetaWorldCollectSpec) -> None:
    """Refuse a folder that holds something else, or a dataset of other settings."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "meta" / "info.json").is_file():
        raise DatasetFormatError(f"--out {str(out)!r} is not empty and holds no unipi "
                                 "dataset (meta/info.json); choose an empty or new folder")
    info = read_info(out)
    diff = {k: (info.get(k), v) for k, v in spec.info().items() if info.get(k) != v}
    if diff:
        raise DatasetFormatError(
            f"--out {str(out)!r} holds a dataset collected with other settings "
            f"(existing, requested): {diff}; use another folder or the same settings"
        )


def _done_indices(out: Path, spec: MetaWorldCollectSpec) -> tuple[dict, dict, set[int]]:
    """Kept and discarded counts per (task, camera), and every seed already tried."""
    for stale in list(out.glob("*/.seed_*.tmp-*")):  # left by a killed run
        stale.unlink()
    kept: dict = {}
    failed: dict = {}
    tried: set[int] = set()
    for folder, counts in (("episodes", kept), ("failed", failed)):
        for path in (out / folder).glob("seed_*.*"):
            seed = int(path.stem.split("_")[1])
            task, camera, _ = decode_seed(seed, spec.seed_offset)
            counts[task, camera] = counts.get((task, camera), 0) + 1
            tried.add(seed)
    return kept, failed, tried


def _next_batch(spec, need: dict, cursor: dict, tried: set[int]) -> list[int]:
    """For each (task, camera) still short, as many untried seeds as it needs."""
    batch = []
    for (task, camera), missing in need.items():
        while missing > 0:
            seed = collect_seed(task, camera, cursor[task, camera], spec.seed_offset)
            cursor[task, camera] += 1
            if seed not in tried:
                batch.append(seed)
                missing -= 1
    return batch


def collect_metaworld(
    out: str | os.PathLike,
    episodes_per_task: int,
    tasks: Sequence[str] | None = None,
    cameras: Sequence[str] | None = None,
    image_size: tuple[int, int] = (64, 64),
    workers: int = 1,
    labelled_fraction: float = 1.0,
    episode_steps: int = EPISODE_STEPS,
    seed_offset: int = 0,
    progress: bool = True,
) -> dict:
    """Collect until every task has ``episodes_per_task`` successful episodes on disk.

    Returns:
        {"kept": int, "discarded": int, "discarded_this_run": int,
         "per_task": {task: kept}, "success_rate_this_run": float or None}
    """
    from envs.metaworld import CAMERAS, TASK_NAMES, check_camera, task_name

    # 1. settings and the folder
    tasks = tuple(task_name(t) for t in (tasks or TASK_NAMES))
    cameras = tuple(check_camera(c) for c in (cameras or CAMERAS))
    _validate(episodes_per_task, tasks, cameras, image_size, workers, labelled_fraction,
              episode_steps)
    spec = MetaWorldCollectSpec(tasks, cameras, tuple(image_size), episode_steps,
                                labelled_fraction, seed_offset)
    out = Path(out)
    _check_out_dir(out, spec)
    write_info(out, spec.info())

    # 2. what is left to do per (task, camera)
    kept, failed, tried = _done_indices(out, spec)
    quota = camera_quota(episodes_per_task, cameras)
    need = {(t, c): max(0, quota[c] - kept.get((t, c), 0)) for t in tasks for c in cameras}
    limit = {(t, c): MAX_ATTEMPTS_FACTOR * quota[c] + 10 for t in tasks for c in cameras}
    cursor = {cell: 0 for cell in need}
    total = sum(quota.values()) * len(tasks)
    bar = tqdm(total=total, initial=total - sum(need.values()), desc="collect metaworld",
               unit="ep", disable=not progress)

    # 3. rounds: each tries as many seeds per cell as the cell still needs
    new_kept = new_failed = 0
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        while any(need.values()):
            batch = _next_batch(spec, need, cursor, tried)
            work = [(s, spec) for s in batch]
            results = pool.map(_run_seed, work) if pool else list(map(_run_seed, work))
            for seed, ep in results:
                tried.add(seed)
                cell = (ep["task"], ep["camera"])
                if ep["success"]:
                    _write(out, seed, ep, spec)
                    need[cell] -= 1
                    new_kept += 1
                    bar.update(1)
                else:
                    marker = {"seed": seed, "family": FAMILY, "task": ep["task"],
                              "camera": ep["camera"]}
                    atomic_write_bytes(failed_path(out, seed), json.dumps(marker).encode())
                    failed[cell] = failed.get(cell, 0) + 1
                    new_failed += 1
            stuck = [c for c in need if need[c] and cursor[c] >= limit[c]]
            if stuck:
                raise RuntimeError(f"the scripted policy keeps failing on {stuck} "
                                   f"({MAX_ATTEMPTS_FACTOR} tries per episode); see {out}/failed")
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    kept, failed, _ = _done_indices(out, spec)
    tries = new_kept + new_failed
    counts = {
        "kept": sum(kept.values()), "discarded": sum(failed.values()),
        "discarded_this_run": new_failed,
        "per_task": {t: sum(kept.get((t, c), 0) for c in cameras) for t in tasks},
        "success_rate_this_run": new_kept / tries if tries else None,
    }
    log.info("collected %s into %s", counts, out)
    return counts


def _write(out: Path, seed: int, ep: dict, spec: MetaWorldCollectSpec) -> None:
    labelled = is_labelled(seed, spec.labelled_fraction)
    record = EpisodeRecord(
        seed=seed, family=FAMILY, instruction=ep["instruction"], split=ep["split"],
        success=bool(ep["success"]), labelled=labelled, length=len(ep["actions"]),
    )
    write_episode(out, record, ep["frames"], ep["states"], ep["actions"] if labelled else None)


def _validate(episodes_per_task, tasks, cameras, image_size, workers, labelled_fraction,
              steps) -> None:
    if not isinstance(episodes_per_task, int) or episodes_per_task < 1:
        raise ValueError(f"--episodes-per-task {episodes_per_task!r}: must be a positive "
                         "integer")
    for name, values in (("--tasks", tasks), ("--cameras", cameras)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} {','.join(values)!r}: each may appear once")
    if len(image_size) != 2 or min(image_size) < 8:
        raise ValueError(f"image size {image_size!r}: expected (H, W), each >= 8")
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    if not 0.0 <= labelled_fraction <= 1.0:
        raise ValueError(f"--labelled-fraction {labelled_fraction}: must be in [0, 1]")
    if not 1 <= steps <= 500:
        raise ValueError(f"--episode-steps {steps}: must be in [1, 500] (Meta-World's limit)")
