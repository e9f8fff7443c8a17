"""The UniPi tabletop as a Gymnasium environment (MuJoCo, rendered headless with EGL).

A Cartesian arm with a suction cup moves coloured blocks on a table with two square
bowls. One class serves both task families; ``envs/__init__.py`` registers them::

    import envs, gymnasium
    env = gymnasium.make("unipi/Place-v0", render_mode="rgb_array", image_size=(32, 32))
    obs, info = env.reset(seed=0, options={"split": "novel"})

Conventions (world frame, metres): table top at z = 0; the camera looks down from the
front, so image right = +x = "right of", image top = +y = "behind", image bottom =
-y = "in front of". The end effector (ee) is the bottom face of the suction cup.

Success is read from simulator state, with suction off (the block is not held) and
the block's centre below REST_MAX_Z (resting on the table or a bowl's base), and no
other block moved more than UNMOVED_TOL in xy since reset:

- place: the block's centre lies within the target bowl's inner walls (per axis);
- relation: with u the named direction, the offset o = block - reference has
  o.u > RELATION_MIN_DISTANCE and |off-axis part of o| <= RELATION_MAX_SKEW * o.u.

Episodes never terminate: success is reported in ``info["success"]`` (and as reward
1.0) at every step, so experts and agents run fixed-length episodes; the TimeLimit
wrapper from registration truncates them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from envs.camera import PinholeCamera  # noqa: E402
from envs.tasks import (  # noqa: E402
    COLOURS,
    FAMILIES,
    RELATION_DIRECTIONS,
    SPLITS,
    Task,
    parse_instruction,
    split_of,
    tasks_in_split,
)

logger = logging.getLogger(__name__)

ASSET_PATH = Path(__file__).with_name("assets") / "tabletop.xml"

# Saturated, well separated colours (RGB in [0, 1]).
RGB = {
    "red": (0.88, 0.1, 0.1),
    "green": (0.1, 0.72, 0.18),
    "blue": (0.12, 0.3, 0.95),
    "yellow": (0.97, 0.86, 0.1),
    "purple": (0.58, 0.18, 0.8),
    "orange": (1.0, 0.52, 0.05),
}
N_BLOCKS = 3
N_BOWLS = 2
BLOCK_HALF = 0.025  # half edge of a cube block
BOWL_HALF = 0.055  # outer half width of a bowl
BOWL_INNER_HALF = 0.047  # half width inside the walls
BOWL_BASE_TOP = 0.004  # height of a bowl's base plate
HOVER_Z = 0.135  # ee height for carrying: a held block clears blocks by 3.5 cm
HOME = (0.0, -0.2, HOVER_Z)  # ee start, at the front edge so it hides no object
EE_LOW = np.array([-0.22, -0.22, 0.0])
EE_HIGH = np.array([0.22, 0.22, 0.25])

# Layout sampling ranges (centres) and clearances; gaps to bowls are per axis (max norm)
# since bowls are squares: 0.1 > BOWL_HALF + half diagonal of a block.
BLOCK_RANGE = ((-0.16, 0.16), (-0.14, 0.16))
BOWL_RANGE = ((-0.14, 0.14), (-0.12, 0.14))
BLOCK_BLOCK_GAP = 0.08
BLOCK_BOWL_GAP = 0.1
BOWL_BOWL_GAP = 0.13
RELATION_OFFSET = 0.1  # where the expert puts a block relative to the reference

# Success thresholds.
RELATION_MIN_DISTANCE = 0.06  # along the named axis
RELATION_MAX_SKEW = 0.5  # |off-axis| <= this * |on-axis|
REST_MAX_Z = 0.045  # block centre height below this: resting on table or bowl base
UNMOVED_TOL = 0.03  # other blocks may move this much in xy

# The cup lights up while suction is commanded, so that frames show the gripper state
# (as an opened or closed gripper would): the planner can draw it, the IDM can read it.
CUP_OFF_RGBA = (0.12, 0.12, 0.12, 1.0)
CUP_ON_RGBA = (0.95, 0.95, 0.95, 1.0)
# Suction: the cup grabs a block whose top face is this close below/above the cup.
SUCTION_XY = 0.02
SUCTION_Z = (-0.01, 0.012)


@dataclass(frozen=True)
class Layout:
    """Colours and poses of one episode's objects.

    Attributes:
        block_colours: (N_BLOCKS,) colour names; block 0 is the one to move.
        bowl_colours: (N_BOWLS,) colour names.
        block_xy: (N_BLOCKS, 2) centres; block_yaw: (N_BLOCKS,) radians.
        bowl_xy: (N_BOWLS, 2) centres.
    """

    block_colours: tuple[str, ...]
    bowl_colours: tuple[str, ...]
    block_xy: np.ndarray
    block_yaw: np.ndarray
    bowl_xy: np.ndarray


def _pick_colours(rng: np.random.Generator, fixed: list[str], n: int) -> tuple[str, ...]:
    """`fixed` colours followed by distinct random others, n in all."""
    others = [c for c in COLOURS if c not in fixed]
    extra = rng.choice(len(others), size=n - len(fixed), replace=False)
    return tuple(fixed) + tuple(others[i] for i in extra)


def _uniform(rng: np.random.Generator, box: tuple) -> np.ndarray:
    """(2,) point uniform in box = ((x_low, x_high), (y_low, y_high))."""
    return rng.uniform((box[0][0], box[1][0]), (box[0][1], box[1][1]))


def _inside(point: np.ndarray, box: tuple) -> bool:
    return all(box[i][0] <= point[i] <= box[i][1] for i in range(2))


def _far(point: np.ndarray, others: list[np.ndarray], gap: float, ord: float = 2) -> bool:
    """Whether `point` (2,) is at least `gap` (vector norm `ord`) from every other point."""
    return all(np.linalg.norm(point - o, ord=ord) >= gap for o in others)


def relation_holds(offset: np.ndarray, relation: str, margin: float = 1.0) -> bool:
    """Whether xy ``offset`` = block - reference satisfies ``relation``.

    ``margin`` > 1 widens the region (used to keep start states clearly unsolved).
    """
    direction = np.array(RELATION_DIRECTIONS[relation])
    along = float(offset @ direction)
    across = abs(float(offset @ direction[::-1]))
    return along > RELATION_MIN_DISTANCE / margin and across <= RELATION_MAX_SKEW * margin * along


def _sample_positions(
    rng: np.random.Generator, task: Task, tries: int = 200
) -> tuple[np.ndarray, np.ndarray] | None:
    """Bowls, then blocks one by one, each redrawn until clear; None when stuck.

    Returns:
        (block_xy (N_BLOCKS, 2), bowl_xy (N_BOWLS, 2)) or None.
    """
    bowls: list[np.ndarray] = []
    for _ in range(N_BOWLS):
        for _ in range(tries):
            xy = _uniform(rng, BOWL_RANGE)
            if _far(xy, bowls, BOWL_BOWL_GAP, np.inf):
                bowls.append(xy)
                break
        else:
            return None
    # Relation: the reference (block 1) goes first, so its goal spot can be kept free.
    order = [1, 0, 2] if task.family == "relation" else [0, 1, 2]
    blocks: dict[int, np.ndarray] = {}
    keep_free: list[np.ndarray] = []
    for index in order:
        for _ in range(tries):
            xy = _uniform(rng, BLOCK_RANGE)
            if not _far(xy, list(blocks.values()) + keep_free, BLOCK_BLOCK_GAP):
                continue
            if not _far(xy, bowls, BLOCK_BOWL_GAP, np.inf):
                continue
            if task.family == "relation" and index == 0 and relation_holds(
                xy - blocks[1], task.relation, margin=1.5
            ):
                continue  # the start state must not already satisfy the instruction
            if task.family == "relation" and index == 1:
                goal = xy + RELATION_OFFSET * np.array(RELATION_DIRECTIONS[task.relation])
                if not _inside(goal, BLOCK_RANGE) or not _far(goal, bowls, BLOCK_BOWL_GAP, np.inf):
                    continue
                keep_free.append(goal)
            blocks[index] = xy
            break
        else:
            return None
    return np.stack([blocks[i] for i in range(N_BLOCKS)]), np.stack(bowls)


def sample_layout(rng: np.random.Generator, task: Task, max_tries: int = 100) -> Layout:
    """Draw colours and non-overlapping poses for `task`, by sequential rejection.

    Place: block 0 has the task's block colour, bowl 0 the target colour.
    Relation: block 0 is moved, block 1 is the reference; the spot at RELATION_OFFSET
    on the named side of the reference is inside the workspace and kept free.
    """
    if task.family == "place":
        block_colours = _pick_colours(rng, [task.block], N_BLOCKS)
        bowl_colours = _pick_colours(rng, [task.target], N_BOWLS)
    else:
        block_colours = _pick_colours(rng, [task.block, task.target], N_BLOCKS)
        bowl_colours = _pick_colours(rng, [], N_BOWLS)
    for _ in range(max_tries):
        positions = _sample_positions(rng, task)
        if positions is not None:
            yaw = rng.uniform(0.0, np.pi / 2, size=N_BLOCKS)
            return Layout(block_colours, bowl_colours, positions[0], yaw, positions[1])
    raise RuntimeError(f"no layout found for {task.instruction!r} after {max_tries=} draws")


def _check_size(name: str, value: Any) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected (H, W), two positive ints") from None
    if not (8 <= height <= 1024 and 8 <= width <= 1024):
        raise ValueError(f"{name}={value!r}: H and W must be in [8, 1024]")
    return height, width


class TabletopEnv(gym.Env):
    """Pick-and-place on a tabletop from language instructions.

    Observation: {"image": (H, W, 3) uint8 from camera "top",
                  "state": (4,) float32 = ee xyz (m) and 1.0 while suction holds a block}.
    Action: (4,) float32 in [-1, 1] = (dx, dy, dz) times `max_delta` metres added to the
        ee position target (clipped to the workspace), and suction on when action[3] > 0.
    Reward: 1.0 when the instruction is satisfied, else 0.0; never terminates.

    Args:
        family: "place" or "relation"; instructions of the other family are refused.
        render_mode: None or "rgb_array" (`render()` then returns render_size frames).
        image_size: (H, W) of observation images.
        render_size: (H, W) of `render()` frames.
        substeps: physics steps of 2 ms per env step (25 -> 20 Hz control).
        max_delta: ee displacement in metres for an action of 1.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        family: str = "place",
        render_mode: str | None = None,
        image_size: tuple[int, int] = (32, 32),
        render_size: tuple[int, int] = (128, 128),
        substeps: int = 25,
        max_delta: float = 0.02,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"family={family!r}: expected one of {FAMILIES}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        if not (isinstance(substeps, int) and substeps >= 1):
            raise ValueError(f"substeps={substeps!r}: expected an int >= 1")
        if not 0.0 < float(max_delta) <= 0.1:
            raise ValueError(f"max_delta={max_delta!r}: expected metres in (0, 0.1]")
        self.family = family
        self.render_mode = render_mode
        self.image_size = _check_size("image_size", image_size)
        self.render_size = _check_size("render_size", render_size)
        self.substeps = substeps
        self.max_delta = float(max_delta)

        self.model = mujoco.MjModel.from_xml_path(str(ASSET_PATH))
        self.data = mujoco.MjData(self.model)
        biggest = max(*self.image_size, *self.render_size)
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, biggest)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, biggest)
        self._index_model()
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

        h, w = self.image_size
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (h, w, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (4,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

        self.task: Task | None = None
        self.split: str | None = None
        self.layout: Layout | None = None
        self._held: int | None = None
        self._start_xy = np.zeros((N_BLOCKS, 2))

    # ----------------------------------------------------------------- model access
    def _index_model(self) -> None:
        """Cache ids and addresses of the bodies, joints and welds we drive."""
        m = self.model
        self._block_body = [m.body(f"block{i}").id for i in range(N_BLOCKS)]
        self._block_qpos = [m.jnt_qposadr[m.body_jntadr[b]] for b in self._block_body]
        self._block_geom = [m.body_geomadr[b] for b in self._block_body]
        self._bowl_body = [m.body(f"bowl{i}").id for i in range(N_BOWLS)]
        self._bowl_geoms = [
            range(m.body_geomadr[b], m.body_geomadr[b] + m.body_geomnum[b])
            for b in self._bowl_body
        ]
        self._arm_qpos = [m.jnt_qposadr[m.joint(n).id] for n in ("x", "y", "z")]
        self._cup_body = m.body("cup").id
        self._cup_geom = m.geom("cup").id
        self._ee_site = m.site("ee").id
        self._weld = [m.equality(f"suction{i}").id for i in range(N_BLOCKS)]
        self._camera = m.camera("top").id

    def ee_position(self) -> np.ndarray:
        """(3,) world position of the cup's bottom face."""
        return self.data.site_xpos[self._ee_site].copy()

    def commanded_position(self) -> np.ndarray:
        """(3,) ee position target held by the actuators."""
        return self.data.ctrl[:3].copy()

    def block_position(self, index: int) -> np.ndarray:
        """(3,) world position of block `index`'s centre."""
        return self.data.xpos[self._block_body[index]].copy()

    def _block_index(self, colour: str) -> int:
        if self.layout is None:
            raise RuntimeError("call reset() before asking for objects")
        if colour not in self.layout.block_colours:
            raise ValueError(f"no {colour!r} block in this scene: {self.layout.block_colours}")
        return self.layout.block_colours.index(colour)

    def privileged_state(self) -> dict[str, Any]:
        """Simulator truth for scripted experts and evaluation.

        Returns:
            {"blocks": {colour: (3,)}, "bowls": {colour: (3,)}, "ee": (3,),
             "commanded": (3,), "holding": colour or None}
        """
        if self.layout is None:
            raise RuntimeError("call reset() before privileged_state()")
        blocks = {c: self.block_position(i) for i, c in enumerate(self.layout.block_colours)}
        bowls = {
            c: self.data.xpos[self._bowl_body[i]].copy()
            for i, c in enumerate(self.layout.bowl_colours)
        }
        holding = None if self._held is None else self.layout.block_colours[self._held]
        return {
            "blocks": blocks,
            "bowls": bowls,
            "ee": self.ee_position(),
            "commanded": self.commanded_position(),
            "holding": holding,
        }

    def camera(self, size: tuple[int, int] | None = None) -> PinholeCamera:
        """The observation camera as a pinhole model, for images of ``size`` (H, W)
        (default: the observation size)."""
        h, w = self.image_size if size is None else size
        return PinholeCamera.from_mujoco(self.model, self.data, self._camera, h, w)

    def target_position(self) -> np.ndarray:
        """(3,) where the task's block centre should rest to satisfy the instruction."""
        if self.task is None or self.layout is None:
            raise RuntimeError("call reset() before target_position()")
        if self.task.family == "place":
            bowl = self.layout.bowl_colours.index(self.task.target)
            xy = self.data.xpos[self._bowl_body[bowl]][:2]
            return np.array([xy[0], xy[1], BOWL_BASE_TOP + BLOCK_HALF])
        ref = self.block_position(self._block_index(self.task.target))
        xy = ref[:2] + RELATION_OFFSET * np.array(RELATION_DIRECTIONS[self.task.relation])
        return np.array([xy[0], xy[1], BLOCK_HALF])

    # -------------------------------------------------------------------- episode
    def _choose_task(self, options: dict) -> tuple[Task, str]:
        unknown = set(options) - {"instruction", "split"}
        if unknown:
            raise ValueError(
                f"reset options {sorted(unknown)} unknown; accepted: 'instruction', 'split'"
            )
        if options.get("instruction") is not None:
            task = options["instruction"]
            if isinstance(task, str):
                task = parse_instruction(task)
            if not isinstance(task, Task):
                raise ValueError(f"instruction={task!r}: expected a str or an envs.Task")
            if task.family != self.family:
                raise ValueError(
                    f"instruction {task.instruction!r} is a {task.family!r} task; this env "
                    f"only accepts family {self.family!r}"
                )
            return task, split_of(task)
        split = options.get("split", "seen")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {SPLITS}")
        tasks = tasks_in_split(self.family, split)
        return tasks[int(self.np_random.integers(len(tasks)))], split

    def _apply_layout(self, layout: Layout) -> None:
        """Write colours and poses into model and data, arm at HOME, suction off."""
        m, d = self.model, self.data
        for i, colour in enumerate(layout.block_colours):
            m.geom_rgba[self._block_geom[i]] = (*RGB[colour], 1.0)
            adr = self._block_qpos[i]
            half_yaw = layout.block_yaw[i] / 2
            d.qpos[adr : adr + 3] = (*layout.block_xy[i], BLOCK_HALF)
            d.qpos[adr + 3 : adr + 7] = (np.cos(half_yaw), 0.0, 0.0, np.sin(half_yaw))
        for i, colour in enumerate(layout.bowl_colours):
            rgb = np.array(RGB[colour])
            for j, geom in enumerate(self._bowl_geoms[i]):
                tint = 0.55 * rgb + 0.45 if j == 0 else rgb  # lighter base plate
                m.geom_rgba[geom] = (*tint, 1.0)
            m.body_pos[self._bowl_body[i]] = (*layout.bowl_xy[i], 0.0)
        d.qpos[self._arm_qpos] = HOME
        d.ctrl[:3] = HOME
        d.eq_active[:] = 0
        m.geom_rgba[self._cup_geom] = CUP_OFF_RGBA
        self._held = None

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; layout and task are functions of the seed (and instruction).

        Args:
            seed: seeds the episode RNG (gymnasium semantics).
            options: {"instruction": str | Task} to fix the task, or {"split": "seen" |
                "novel"} to draw one from that split (default "seen").
        """
        super().reset(seed=seed)
        self.task, self.split = self._choose_task(options or {})
        self.layout = sample_layout(self.np_random, self.task)
        mujoco.mj_resetData(self.model, self.data)
        self._apply_layout(self.layout)
        mujoco.mj_forward(self.model, self.data)
        self._start_xy = np.array([self.block_position(i)[:2] for i in range(N_BLOCKS)])
        return self._observation(), self._info(success=False)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Move the ee target by action[:3] * max_delta, switch suction, simulate."""
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action={action!r}: expected 4 finite floats in [-1, 1]")
        action = np.clip(action, -1.0, 1.0)

        # 1. new ee target, suction release before moving
        target = self.data.ctrl[:3] + action[:3] * self.max_delta
        self.data.ctrl[:3] = np.clip(target, EE_LOW, EE_HIGH)
        suction = bool(action[3] > 0)
        self.model.geom_rgba[self._cup_geom] = CUP_ON_RGBA if suction else CUP_OFF_RGBA
        if not suction and self._held is not None:
            self.data.eq_active[self._weld[self._held]] = 0
            self._held = None

        # 2. physics
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)

        # 3. suction grabs a block the cup touches
        if suction and self._held is None:
            self._try_grasp()

        success = self.is_success()
        return self._observation(), float(success), False, False, self._info(success)

    def _try_grasp(self) -> None:
        """Weld the block right under the cup to it, at their current relative pose."""
        ee = self.ee_position()
        best, best_dist = None, SUCTION_XY
        for i in range(N_BLOCKS):
            pos = self.block_position(i)
            gap = ee[2] - (pos[2] + BLOCK_HALF)
            dist = float(np.linalg.norm(pos[:2] - ee[:2]))
            if SUCTION_Z[0] <= gap <= SUCTION_Z[1] and dist <= best_dist:
                best, best_dist = i, dist
        if best is None:
            return
        d, cup, block = self.data, self._cup_body, self._block_body[best]
        cup_inv = np.zeros(4)
        mujoco.mju_negQuat(cup_inv, d.xquat[cup])
        rel_pos = np.zeros(3)
        mujoco.mju_rotVecQuat(rel_pos, d.xpos[block] - d.xpos[cup], cup_inv)
        rel_quat = np.zeros(4)
        mujoco.mju_mulQuat(rel_quat, cup_inv, d.xquat[block])
        weld = self._weld[best]
        self.model.eq_data[weld, 0:3] = 0.0  # anchor at the block's centre
        self.model.eq_data[weld, 3:6] = rel_pos
        self.model.eq_data[weld, 6:10] = rel_quat
        d.eq_active[weld] = 1
        self._held = best

    def is_success(self) -> bool:
        """Whether the instruction holds now (rules in the module docstring)."""
        assert self.task is not None and self.layout is not None
        moved = self._block_index(self.task.block)
        pos = self.block_position(moved)
        if self._held is not None or pos[2] > REST_MAX_Z:
            return False
        others = [i for i in range(N_BLOCKS) if i != moved]
        now = np.array([self.block_position(i)[:2] for i in others])
        if np.linalg.norm(now - self._start_xy[others], axis=-1).max() > UNMOVED_TOL:
            return False
        if self.task.family == "place":
            bowl = self.layout.bowl_colours.index(self.task.target)
            offset = pos[:2] - self.data.xpos[self._bowl_body[bowl]][:2]
            return bool(np.abs(offset).max() < BOWL_INNER_HALF)
        ref = self.block_position(self._block_index(self.task.target))
        return relation_holds(pos[:2] - ref[:2], self.task.relation)

    # ------------------------------------------------------------------ rendering
    def _render_at(self, size: tuple[int, int]) -> np.ndarray:
        renderer = self._renderers.get(size)
        if renderer is None:
            try:
                renderer = mujoco.Renderer(self.model, height=size[0], width=size[1])
            except mujoco.FatalError as err:
                raise RuntimeError(
                    f"cannot create an OpenGL context (MUJOCO_GL="
                    f"{os.environ.get('MUJOCO_GL')!r}): mujoco picks its GL backend when "
                    "first imported, so import envs before mujoco or set MUJOCO_GL=egl"
                ) from err
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
            self._renderers[size] = renderer
        renderer.update_scene(self.data, camera=self._camera)
        return renderer.render()

    def render(self) -> np.ndarray | None:
        """(render_H, render_W, 3) uint8 frame when render_mode is "rgb_array"."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass 'rgb_array'")
            return None
        return self._render_at(self.render_size)

    def _observation(self) -> dict[str, np.ndarray]:
        held = 0.0 if self._held is None else 1.0
        state = np.array([*self.ee_position(), held], dtype=np.float32)
        return {"image": self._render_at(self.image_size), "state": state}

    def _info(self, success: bool) -> dict[str, Any]:
        assert self.task is not None
        return {
            "instruction": self.task.instruction,
            "task": self.task,
            "split": self.split,
            "success": bool(success),
        }

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
