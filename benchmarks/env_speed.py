"""Speed of the tabletop env and success rate of the scripted expert.

Measures rendered env steps per second at several observation sizes, expert episodes
per minute, and expert success per family and split. Rates are given per wall second
and per CPU second of this process (all its threads, the renderer's included): the
second is the per-core figure, and it holds when other work shares the machine::

    python benchmarks/env_speed.py --seeds 200
    python benchmarks/env_speed.py --seeds 20 --sizes 32 64  # quick look
    python benchmarks/env_speed.py --gifs docs/media  # expert_<family>.gif
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

import envs
from envs.expert import run_expert_episode

logger = logging.getLogger("env_speed")


class Timer:
    """Wall and CPU seconds (this process, all threads) since it was made."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, count: float) -> tuple[float, float]:
        """count per wall second, count per CPU second."""
        return (count / (time.perf_counter() - self.wall),
                count / (time.process_time() - self.cpu))


def steps_per_second(size: int, steps: int) -> tuple[float, float]:
    """Random-action env steps per (wall, CPU) second with (size, size) observations."""
    env = envs.make_env("place", image_size=(size, size))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 4)).astype(np.float32)
    timer = Timer()
    for t in range(steps):
        _, _, _, truncated, _ = env.step(actions[t])
        if truncated:
            env.reset()
    rates = timer.rates(steps)
    env.close()
    return rates


def expert_stats(family: str, seeds: int, max_steps: int, split: str) -> dict[str, float]:
    """Success rate, finishing-step statistics and episodes per minute of the expert."""
    env = envs.make_env(family, image_size=(32, 32))
    successes, done_steps, failures = [], [], []
    timer = Timer()
    for seed in range(seeds):
        episode = run_expert_episode(env, seed, max_steps=max_steps, split=split)
        successes.append(episode["success"])
        done_steps.append(episode["done_step"] if episode["done_step"] >= 0 else max_steps)
        if not episode["success"]:
            failures.append((seed, episode["instruction"]))
    per_wall_s, per_cpu_s = timer.rates(seeds)
    env.close()
    if failures:
        logger.info("%s failures (seed, instruction): %s", family, failures)
    steps = np.array(done_steps)
    return {
        "success": float(np.mean(successes)),
        "done_mean": float(steps.mean()),
        "done_p95": float(np.percentile(steps, 95)),
        "done_max": float(steps.max()),
        "episodes_per_min": 60.0 * per_wall_s,
        "episodes_per_cpu_min": 60.0 * per_cpu_s,
    }


def save_gifs(folder: Path, seed: int = 0, size: int = 128) -> None:
    """One expert episode per family as folder/expert_<family>.gif at size x size."""
    import imageio.v2 as imageio

    folder.mkdir(parents=True, exist_ok=True)
    for family in envs.FAMILIES:
        env = envs.make_env(family, image_size=(size, size))
        episode = run_expert_episode(env, seed, max_steps=56)
        env.close()
        path = folder / f"expert_{family}.gif"
        imageio.mimsave(path, list(episode["frames"]), duration=80, loop=0)
        logger.info("wrote %s: %r, success=%s", path, episode["instruction"], episode["success"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="expert episodes per family")
    parser.add_argument("--steps", type=int, default=1000, help="env steps per image size")
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 128])
    parser.add_argument("--max-steps", type=int, default=64, help="expert episode length")
    parser.add_argument("--splits", nargs="*", choices=["seen", "novel"],
                        default=["seen", "novel"])
    parser.add_argument("--gifs", type=Path, help="only write one expert gif per family here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.gifs is not None:
        save_gifs(args.gifs)
        return

    for size in args.sizes:
        wall, cpu = steps_per_second(size, args.steps)
        print(f"rendered steps/s at {size}x{size}: {cpu:,.0f} per CPU second "
              f"({wall:,.0f} per wall second)")
    for family in envs.FAMILIES:
        for split in args.splits:
            stats = expert_stats(family, args.seeds, args.max_steps, split)
            print(
                f"expert {family} ({split}): success {stats['success']:.1%} over "
                f"{args.seeds} seeds, finishes at step mean {stats['done_mean']:.1f} / "
                f"p95 {stats['done_p95']:.0f} / max {stats['done_max']:.0f}, "
                f"{stats['episodes_per_cpu_min']:,.0f} episodes per CPU minute "
                f"({stats['episodes_per_min']:,.0f} per wall minute; {args.max_steps} steps "
                "each)"
            )


if __name__ == "__main__":
    main()
