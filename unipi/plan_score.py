"""Plan-level success: does the last frame of an imagined plan achieve the instruction?

A plan is scored from its pixels alone, without executing it, using what is known of
the start state (the env's geometry, camera and object colours)::

    scorer = PlanScorer()
    image, scene = start_scene(env, seed=3, instruction="place the red block in the blue bowl")
    plan = pipe(image, scene.task.instruction).videos[0]           # (F, H, W, 3) uint8
    scorer.score(plan, scene).success

How a frame is read:

1. Colour masks. A pixel shows a block or bowl wall of colour c when its hue is within
   ``hue_tolerance`` degrees of c's hue and it is saturated and bright enough; the pale
   bowl bases, the grey table and the grey/black arm fall outside every colour.
2. A block in the last frame = the largest 8-connected region of colour-c pixels that
   were not colour c in frame 0, or that lie where block c stood in frame 0 (so the
   walls of a bowl of the same colour never count as the block).
3. Its centroid is cast back onto the plane at ``block_height`` through the camera
   (``envs.camera.PinholeCamera``), giving a table position in metres.
4. The env's own success rules are applied to those positions: place, the block's
   centre within the target bowl's inner walls; relation, ``envs.tabletop.relation_holds``
   of the block against the reference block; and every other block within
   ``unmoved_tol`` of where the same reading put it in frame 0.

A plan whose target block cannot be found in its last frame fails. The rules match
``TabletopEnv.is_success`` except that the block's height is not read (a block still
held high up reads as a wrong position, not as "held").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from envs.camera import PinholeCamera
from envs.tabletop import (
    BLOCK_HALF,
    BOWL_INNER_HALF,
    UNMOVED_TOL,
    relation_holds,
)
from envs.tasks import Task

# Hue (degrees) of each colour as the camera renders its lit faces: lighting saturates
# some channels, moving yellow from its material's 52 to 60 and orange from 30 to 36
# (measured on block top faces; tests/test_plan_score.py checks them against renders).
HUES = {"red": 0.0, "green": 128.0, "blue": 225.0, "yellow": 60.0, "purple": 279.0,
        "orange": 36.0}
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class StartScene:
    """What the scorer knows of an episode's start state.

    Attributes:
        task: the instruction as data.
        block_colours: (N,) names; block_xy: (N, 2) start centres in metres.
        bowl_colours: (M,) names; bowl_xy: (M, 2) centres in metres (bowls never move).
        camera: the observation camera at the plan's resolution.
    """

    task: Task
    block_colours: tuple[str, ...]
    block_xy: np.ndarray
    bowl_colours: tuple[str, ...]
    bowl_xy: np.ndarray
    camera: PinholeCamera

    @classmethod
    def from_env(cls, env) -> "StartScene":
        """Read the scene of a tabletop env right after ``reset``."""
        env = env.unwrapped
        state = env.privileged_state()
        blocks, bowls = state["blocks"], state["bowls"]
        return cls(
            task=env.task,
            block_colours=tuple(blocks), block_xy=np.stack([p[:2] for p in blocks.values()]),
            bowl_colours=tuple(bowls), bowl_xy=np.stack([p[:2] for p in bowls.values()]),
            camera=env.camera(),
        )


def start_scene(env, seed: int, instruction: str) -> tuple[np.ndarray, StartScene]:
    """Reset ``env`` to (seed, instruction): the observation image and its scene."""
    obs, _ = env.reset(seed=int(seed), options={"instruction": instruction})
    return obs["image"], StartScene.from_env(env)


@dataclass
class PlanScore:
    """The reading of one plan.

    ``target_xy`` (2,) is where the moved block was read in the last frame (None: not
    found); ``others_shift`` the distance each other block moved, in metres (inf when
    one was not found).
    """

    success: bool
    target_found: bool
    target_ok: bool
    others_unmoved: bool
    target_xy: np.ndarray | None = None
    others_shift: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanScorer:
    """Reads block positions off frames by colour and applies the env's success rules.

    Args:
        hue_tolerance: degrees of hue around a colour's own that still count as it.
        min_saturation, min_value: HSV floor of a block or wall pixel (bowl bases are
            paler, about 0.35-0.45 saturation).
        block_height: height (m) of the plane pixels are cast back onto: between the
            centre and the top face of a block, where most of its visible pixels lie.
        unmoved_tol: how far (m) another block may seem to move.
    """

    hue_tolerance: float = 11.0
    min_saturation: float = 0.55
    min_value: float = 0.2
    block_height: float = 1.6 * BLOCK_HALF
    unmoved_tol: float = UNMOVED_TOL

    # ---------------------------------------------------------------- pixels
    def colour_mask(self, frame: np.ndarray, colour: str) -> np.ndarray:
        """(H, W) bool: pixels of ``frame`` (H, W, 3) uint8 that show ``colour``."""
        rgb = frame.astype(np.float32) / 255.0
        hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
        sat = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0)
        hue = _hue_degrees(rgb, hi, lo)
        gap = np.abs((hue - HUES[colour] + 180.0) % 360.0 - 180.0)
        return (gap <= self.hue_tolerance) & (sat >= self.min_saturation) & (hi >= self.min_value)

    def _footprint(self, xy: np.ndarray, camera: PinholeCamera) -> np.ndarray:
        """(H, W) bool: the pixel box a block at ``xy`` covers, one pixel of margin."""
        corners = np.array([[dx, dy, dz] for dx in (-1, 1) for dy in (-1, 1) for dz in (0, 2)])
        points = np.array([xy[0], xy[1], 0.0]) + BLOCK_HALF * 1.42 * corners * [1, 1, 0.71]
        uv = camera.project(points)
        mask = np.zeros((camera.height, camera.width), dtype=bool)
        u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
        u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 1
        mask[max(v0, 0):max(v1, 0), max(u0, 0):max(u1, 0)] = True
        return mask

    def locate(self, frame: np.ndarray, colour: str, scene: StartScene,
               first: np.ndarray) -> np.ndarray | None:
        """(2,) table position (m) of the block of ``colour`` in ``frame``, or None.

        ``first`` is frame 0 of the same plan: colour pixels it already had away from
        the block's start (a bowl wall of the same colour) are not the block.
        """
        start = scene.block_xy[scene.block_colours.index(colour)]
        static = self.colour_mask(first, colour) & ~self._footprint(start, scene.camera)
        mask = self.colour_mask(frame, colour) & ~static
        labels, n = ndimage.label(mask, structure=_EIGHT)
        if n == 0:
            return None
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
        uv = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
        return scene.camera.unproject(uv, self.block_height)[:2]

    # ---------------------------------------------------------------- rules
    def score(self, video: np.ndarray, scene: StartScene) -> PlanScore:
        """Score a plan ``video`` uint8 (F, H, W, 3) whose frame 0 is the start state."""
        video = np.asarray(video)
        cam = scene.camera
        if video.ndim != 4 or video.shape[1:] != (cam.height, cam.width, 3):
            raise ValueError(f"video: expected (F, {cam.height}, {cam.width}, 3) uint8, "
                             f"got {video.dtype} {video.shape}")
        if video.dtype != np.uint8:
            raise ValueError(f"video: expected uint8 frames, got {video.dtype}")
        first, last, task = video[0], video[-1], scene.task

        # 1. where the moved block ended up
        xy = self.locate(last, task.block, scene, first)
        target_ok = False
        if xy is not None and task.family == "place":
            bowl = scene.bowl_xy[scene.bowl_colours.index(task.target)]
            target_ok = bool(np.abs(xy - bowl).max() < BOWL_INNER_HALF)
        elif xy is not None:
            ref = self.locate(last, task.target, scene, first)
            target_ok = ref is not None and relation_holds(xy - ref, task.relation)

        # 2. every other block stayed where it was
        shifts = {}
        for colour in scene.block_colours:
            if colour == task.block:
                continue
            a, b = self.locate(first, colour, scene, first), self.locate(last, colour, scene, first)
            shifts[colour] = np.inf if a is None or b is None else float(np.linalg.norm(b - a))
        unmoved = all(s <= self.unmoved_tol for s in shifts.values())
        return PlanScore(success=bool(target_ok and unmoved), target_found=xy is not None,
                         target_ok=bool(target_ok), others_unmoved=unmoved, target_xy=xy,
                         others_shift=shifts)


def _hue_degrees(rgb: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """HSV hue in degrees [0, 360) of (..., 3) floats, 0 where the pixel is grey."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    span = np.maximum(hi - lo, 1e-6)
    hue = np.where(hi == r, ((g - b) / span) % 6.0,
                   np.where(hi == g, (b - r) / span + 2.0, (r - g) / span + 4.0))
    return np.where(hi - lo > 1e-6, 60.0 * hue, 0.0)
