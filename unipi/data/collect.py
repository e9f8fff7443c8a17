"""Collect scripted-expert demonstrations into a dataset folder.

    unipi collect --env place --episodes 200 --workers 2 --out data/place

Seeds come from the training range (``unipi.seeds``); seed ``offset + i`` is the
i-th attempt. Only successful episodes are kept; discarded seeds are marked so that a
re-run neither retries nor double-counts them. A killed run continues where it
stopped when it is run again with the same arguments.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from unipi.checkpoint import atomic_write_bytes
from unipi.data.format import (
    DatasetFormatError,
    EpisodeRecord,
    episode_path,
    failed_path,
    read_info,
    write_episode,
    write_info,
)
from unipi.seeds import train_seed

log = logging.getLogger(__name__)
SPLITS = ("seen", "novel")


@dataclass(frozen=True)
class CollectSpec:
    families: tuple[str, ...]
    image_size: tuple[int, int]
    episode_steps: int
    labelled_fraction: float
    split: str = "seen"
    seed_offset: int = 0


def is_labelled(seed: int, fraction: float) -> bool:
    """Exactly ``fraction`` of any run of consecutive seeds keeps its action labels."""
    return math.floor((seed + 1) * fraction) != math.floor(seed * fraction)


def family_of(seed: int, families: Sequence[str]) -> str:
    return families[seed % len(families)]


def task_for_seed(seed: int, family: str, split: str):
    """The (family, split) task an episode with this seed demonstrates."""
    from envs.tasks import tasks_in_split

    tasks = tasks_in_split(family, split)
    return tasks[np.random.default_rng([seed, 7]).integers(len(tasks))]


_WORKER_ENVS: dict = {}


def _worker_env(family: str, spec: CollectSpec):
    key = (family, spec.image_size)
    if key not in _WORKER_ENVS:
        from envs import make_env

        _WORKER_ENVS[key] = make_env(family, image_size=spec.image_size)
    return _WORKER_ENVS[key]


def _run_seed(args: tuple[int, CollectSpec]) -> tuple[int, dict | None, str]:
    """Run the expert for one seed in a worker; returns (seed, episode or None, family)."""
    seed, spec = args
    from envs.expert import run_expert_episode

    family = family_of(seed, spec.families)
    task = task_for_seed(seed, family, spec.split)
    env = _worker_env(family, spec)
    ep = run_expert_episode(env, seed, instruction=task.instruction, max_steps=spec.episode_steps)
    ep["family"], ep["split"] = family, spec.split
    return seed, ep, family


def _check_out_dir(out: Path, spec: CollectSpec) -> None:
    """Refuse a folder that holds something else, or a dataset of other settings."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "meta" / "info.json").is_file():
        raise DatasetFormatError(
            f"--out {str(out)!r} is not empty and holds no unipi dataset "
            "(meta/info.json); choose an empty or new folder"
        )
    info = read_info(out)
    mine = _info_of(spec)
    diff = {k: (info.get(k), v) for k, v in mine.items() if info.get(k) != v}
    if diff:
        raise DatasetFormatError(
            f"--out {str(out)!r} holds a dataset collected with other settings "
            f"(existing, requested): {diff}; use another folder or the same settings"
        )


def _info_of(spec: CollectSpec) -> dict:
    return {
        "image_size": list(spec.image_size),
        "action_dim": 4,
        "state_dim": 4,
        "families": list(spec.families),
        "episode_steps": spec.episode_steps,
        "labelled_fraction": spec.labelled_fraction,
        "split": spec.split,
        "seed_offset": spec.seed_offset,
    }


def _pending_seeds(out: Path, spec: CollectSpec) -> tuple[int, int, Iterator[int]]:
    """(kept so far, discarded so far, the seeds still to try, in order)."""
    for stale in list(out.glob("*/.seed_*.tmp-*")):  # left by a killed run
        stale.unlink()
    kept = len(list((out / "episodes").glob("seed_*.parquet")))
    failed = len(list((out / "failed").glob("seed_*.json")))

    def seeds() -> Iterator[int]:
        i = 0
        while True:
            seed = train_seed(i, spec.seed_offset)
            if not episode_path(out, seed).exists() and not failed_path(out, seed).exists():
                yield seed
            i += 1

    return kept, failed, seeds()


def collect(
    out: str | os.PathLike,
    episodes: int,
    families: Sequence[str] = ("place",),
    image_size: tuple[int, int] = (32, 32),
    workers: int = 1,
    labelled_fraction: float = 0.1,
    episode_steps: int = 64,
    split: str = "seen",
    seed_offset: int = 0,
    progress: bool = True,
) -> dict:
    """Collect until ``episodes`` successful episodes are on disk; returns the counts."""
    _validate(episodes, families, image_size, workers, labelled_fraction, episode_steps, split)
    spec = CollectSpec(tuple(families), tuple(image_size), episode_steps, labelled_fraction,
                       split, seed_offset)
    out = Path(out)
    _check_out_dir(out, spec)
    write_info(out, _info_of(spec))
    kept, failed, seeds = _pending_seeds(out, spec)
    bar = tqdm(total=episodes, initial=min(kept, episodes), desc="collect", unit="ep",
               disable=not progress)
    new_failed = 0
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        while kept < episodes:
            batch = [next(seeds) for _ in range(max(workers, 1) * 2)]
            work = [(s, spec) for s in batch]
            results = pool.map(_run_seed, work) if pool else list(map(_run_seed, work))
            for seed, ep, family in results:
                if kept >= episodes:
                    break
                if ep["success"]:
                    _write(out, seed, ep, spec)
                    kept += 1
                    bar.update(1)
                else:
                    atomic_write_bytes(failed_path(out, seed),
                                       f'{{"seed": {seed}, "family": "{family}"}}'.encode())
                    new_failed += 1
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    counts = {"kept": kept, "discarded": failed + new_failed, "discarded_this_run": new_failed}
    log.info("collected %s into %s", counts, out)
    return counts


def _write(out: Path, seed: int, ep: dict, spec: CollectSpec) -> None:
    labelled = is_labelled(seed, spec.labelled_fraction)
    record = EpisodeRecord(
        seed=seed, family=ep["family"], instruction=ep["instruction"], split=ep["split"],
        success=bool(ep["success"]), labelled=labelled, length=len(ep["actions"]),
    )
    write_episode(out, record, ep["frames"], ep["states"], ep["actions"] if labelled else None)


def _validate(episodes, families, image_size, workers, labelled_fraction, steps, split) -> None:
    from envs.tasks import FAMILIES

    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"--episodes {episodes!r}: must be a positive integer")
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise ValueError(f"--env {','.join(families)!r}: accepted families are "
                         f"{', '.join(FAMILIES)} (or 'all')")
    if len(image_size) != 2 or min(image_size) < 8:
        raise ValueError(f"image size {image_size!r}: expected (H, W), each >= 8")
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    if not 0.0 <= labelled_fraction <= 1.0:
        raise ValueError(f"--labelled-fraction {labelled_fraction}: must be in [0, 1]")
    if steps < 1:
        raise ValueError(f"--episode-steps {steps}: must be >= 1")
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: expected one of {SPLITS}")
