"""Rendered frames per second of Meta-World: its own renderer's defaults vs ours.

Per camera, in one run (so the machine's load is the same for all): Meta-World's
renderer as it comes (480x480, 4x multisampling, shadows, reflections, skybox), the
same at our frame size, and ``envs.metaworld.FastRenderer`` (offscreen buffer of the
frame's size, none of those). Each frame follows one env step, so the numbers are
what an episode sees; the physics alone is reported beside them::

    python benchmarks/metaworld_render_speed.py                    # 64x64, 100 frames
    python benchmarks/metaworld_render_speed.py --size 128 --frames 50 --task assembly
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from envs.metaworld import CAMERAS, FastRenderer, make_raw_env, roll_cameras_upright  # noqa: E402

DEFAULT_SIZE = 480  # Meta-World v3's width and height


def _timed(raw, render, frames: int) -> float:
    """Frames per second of ``render()`` after each of ``frames`` random steps."""
    rng = np.random.default_rng(0)
    raw.seed(0)
    raw.reset()
    render()  # the GL context is made on the first frame
    start = time.perf_counter()
    for _ in range(frames):
        raw.step(rng.uniform(-1, 1, 4))
        render()
    return frames / (time.perf_counter() - start)


def physics_fps(task: str, frames: int) -> float:
    raw = make_raw_env(task)
    fps = _timed(raw, lambda: None, frames)
    raw.close()
    return fps


def metaworld_fps(task: str, camera: str, size: int, frames: int) -> float:
    """Meta-World's own renderer (gymnasium's MujocoRenderer) with its defaults."""
    raw = make_raw_env(task, render_mode="rgb_array", camera_name=camera, width=size,
                       height=size)
    fps = _timed(raw, raw.render, frames)
    raw.close()
    return fps


def our_fps(task: str, camera: str, size: int, frames: int) -> float:
    raw = make_raw_env(task)
    roll_cameras_upright(raw.model, raw.data)
    renderer = FastRenderer(raw.model, (size, size))
    fps = _timed(raw, lambda: renderer.render(raw.data, camera), frames)
    renderer.close()
    raw.close()
    return fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="door-open")
    parser.add_argument("--size", type=int, default=64, help="our frames, size x size")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()

    print(f"task {args.task}, {args.frames} frames each; physics alone "
          f"{physics_fps(args.task, args.frames):.0f} steps/s")
    head = (f"| camera | Meta-World default {DEFAULT_SIZE}x{DEFAULT_SIZE} | Meta-World "
            f"default {args.size}x{args.size} | ours {args.size}x{args.size} | ours / "
            f"default {DEFAULT_SIZE} | ours / default {args.size} |")
    print(head, "|---|---|---|---|---|---|", sep="\n")
    for camera in CAMERAS:
        big = metaworld_fps(args.task, camera, DEFAULT_SIZE, max(10, args.frames // 5))
        same = metaworld_fps(args.task, camera, args.size, args.frames)
        ours = our_fps(args.task, camera, args.size, args.frames)
        print(f"| {camera} | {big:.1f} | {same:.1f} | {ours:.1f} | {ours / big:.1f}x | "
              f"{ours / same:.1f}x |")


if __name__ == "__main__":
    main()
