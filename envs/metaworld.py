"""Meta-World (v3 tasks, MuJoCo) as UniPi environments: the 11 tasks that AVDC evaluated,
seen from the scene's three corner cameras.

Needs the optional extra ``pip install -e ".[metaworld]"`` (``metaworld==3.0.0``)::

    import envs, gymnasium
    env = gymnasium.make("unipi/MetaWorld-v0", task="door-open", camera="corner2",
                         image_size=(64, 64))
    obs, info = env.reset(seed=0)        # info["instruction"] == "open the door"

Conventions:

- Tasks: ``TASKS`` maps AVDC's task names (Meta-World's ``<name>-v3`` without the
  version) to the instruction, the task in words. Every task is a "seen" task: training
  and evaluation differ by seed (``unipi.seeds``), not by task.
- Observation: ``{"image": (H, W, 3) uint8 from the camera, "state": (4,) float32}``,
  state = hand xyz (m, Meta-World's world frame) and gripper opening in [0, 1].
- Action: (4,) float32 in [-1, 1]: hand displacement (dx, dy, dz) in cm and gripper
  effort (> 0 closes), as Meta-World's own action space.
- Success: Meta-World's ``info["success"]``, in ``info["success"]`` and as reward 1.0.
  Episodes never terminate; the TimeLimit of registration (500 steps, Meta-World's
  ``max_path_length`` and AVDC's limit) truncates them.
- Seeding: the object and goal positions are drawn from ``reset(seed=)`` alone
  (Meta-World's ``seeded_rand_vec``), so a seed gives the same start on every camera.
- Cameras: Meta-World mounts all three corner cameras upside down (each camera's image-up
  axis points below the horizon, world z of its y axis: corner -0.96, corner2 -0.87,
  corner3 -0.53), so their frames come out rotated by 180 degrees. Every camera whose
  up axis points down is rolled by 180 degrees about its optical axis when the model is
  built, so world up is image up on every camera (a roll, not a mirror: left stays left).
- Rendering: one ``mujoco.Renderer`` per frame size with an offscreen buffer of exactly
  that size, no multisampling, no shadows, reflections or skybox: > 100 frames/s at
  64x64 where Meta-World's own renderer makes ~5-10 (``benchmarks/metaworld_render_speed.py``).
- MuJoCo >= 3.17 has 12 weld parameters (``mjNEQDATA``) where Meta-World writes 11;
  the env writes the 11 and zeroes the 12th (the "recompute relpose" flag), so
  Meta-World's relative poses stand as on older MuJoCo.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from envs.tabletop import _check_size  # noqa: E402

logger = logging.getLogger(__name__)

# AVDC's 11 tasks, in the order of its Table 1, and each one in words.
TASKS: dict[str, str] = {
    "door-open": "open the door",
    "door-close": "close the door",
    "basketball": "put the ball in the basket",
    "shelf-place": "place the puck on the shelf",
    "button-press": "press the button",
    "button-press-topdown": "press the button from above",
    "faucet-close": "close the faucet",
    "faucet-open": "open the faucet",
    "handle-press": "press the handle down",
    "hammer": "hammer the nail in",
    "assembly": "put the ring on the peg",
}
TASK_NAMES = tuple(TASKS)
CAMERAS = ("corner", "corner2", "corner3")
MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length, AVDC's step limit
ENV_ID = "unipi/MetaWorld-v0"
SPLIT = "seen"
STATE_DIM = 4
ACTION_DIM = 4
INSTALL_HINT = 'pip install -e ".[metaworld]" (metaworld==3.0.0)'

# Meta-World's weld setting for its mocap (anchor, relpose pos, relpose quat, torquescale).
_MOCAP_WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)
_ROLL_180 = np.array([0.0, 0.0, 0.0, 1.0])  # quaternion: 180 degrees about the camera's z


def task_name(task: str) -> str:
    """``"door-open"`` for ``"door-open"`` or ``"door-open-v3"``; refuses other tasks."""
    name = task[:-3] if isinstance(task, str) and task.endswith("-v3") else task
    if name not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {', '.join(TASK_NAMES)}")
    return name


def task_of_instruction(text: str) -> str:
    """The task whose instruction is ``text`` (case, spaces and a final '.' ignored)."""
    norm = " ".join(str(text).lower().split()).rstrip(".").strip()
    for name, instruction in TASKS.items():
        if instruction == norm:
            return name
    raise ValueError(f"instruction {text!r} is no Meta-World task; expected one of "
                     f"{sorted(TASKS.values())}")


def check_camera(camera: str) -> str:
    if camera not in CAMERAS:
        raise ValueError(f"camera={camera!r}: expected one of {', '.join(CAMERAS)}")
    return camera


def _reset_mocap_welds(self) -> None:
    """Meta-World's weld reset, for MuJoCo's 11 and 12 (>= 3.17) weld parameters."""
    model = self.model
    for i in range(model.neq):
        if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
            model.eq_data[i, :11] = _MOCAP_WELD
            model.eq_data[i, 11:] = 0.0  # the relpose is set here, not recomputed


@functools.lru_cache(maxsize=None)
def _env_class(task: str) -> type:
    """Meta-World's class for ``task`` with the weld reset that works on any MuJoCo 3+."""
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except ImportError as err:
        raise ImportError(f"Meta-World is not installed: {INSTALL_HINT}") from err
    base = ALL_V3_ENVIRONMENTS[f"{task}-v3"]
    return type(base.__name__, (base,), {"reset_mocap_welds": _reset_mocap_welds})


def make_raw_env(task: str, **kwargs):
    """A Meta-World env of ``task`` set up as AVDC's "goal observable" envs, seeded by
    ``raw.seed(s)`` before each ``raw.reset()``; kwargs go to Meta-World's constructor
    (``render_mode``, ``camera_name``, ``width``, ``height`` for its own renderer).

    The goal is in the 39-d observation (the scripted policies read it there), and each
    reset draws new object and goal positions from ``raw.np_random``.
    """
    raw = _env_class(task_name(task))(**kwargs)
    raw._partially_observable = False
    raw.__dict__.pop("sawyer_observation_space", None)  # cached with the goal zeroed
    raw._freeze_rand_vec = False
    raw.seeded_rand_vec = True
    raw._set_task_called = True
    raw.max_path_length = np.iinfo(np.int64).max  # our TimeLimit ends episodes
    return raw


def camera_up(model: mujoco.MjModel, data: mujoco.MjData, camera: str) -> np.ndarray:
    """(3,) world direction of the camera's image-up axis (its y axis)."""
    return data.cam_xmat[model.camera(camera).id].reshape(3, 3)[:, 1].copy()


def roll_cameras_upright(model: mujoco.MjModel, data: mujoco.MjData,
                         cameras: tuple[str, ...] = CAMERAS) -> dict[str, bool]:
    """Roll each camera whose image-up axis points down by 180 degrees about its optical
    axis; returns ``{camera: rolled}``. Fixed cameras only (their pose is in the model)."""
    mujoco.mj_forward(model, data)
    rolled = {}
    for name in cameras:
        cam = model.camera(name).id
        if model.cam_mode[cam] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED:
            raise ValueError(f"camera {name!r} is not fixed; only fixed cameras are rolled")
        rolled[name] = bool(camera_up(model, data, name)[2] < 0.0)
        if rolled[name]:
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, model.cam_quat[cam].copy(), _ROLL_180)
            model.cam_quat[cam] = quat
    mujoco.mj_forward(model, data)
    return rolled


def project(model: mujoco.MjModel, data: mujoco.MjData, camera: str, points: np.ndarray,
            size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates (u = column, v = row) of world points in a (H, W) frame.

    Args:
        points: (N, 3) world positions in front of the camera.

    Returns:
        (N, 2) float (u, v); (0, 0) is the top-left corner of the top-left pixel.
    """
    h, w = size
    cam = model.camera(camera).id
    rot = data.cam_xmat[cam].reshape(3, 3)  # columns: camera x (right), y (up), z (back)
    local = (np.asarray(points, dtype=float) - data.cam_xpos[cam]) @ rot  # (N, 3)
    depth = -local[:, 2]
    if np.any(depth <= 0):
        raise ValueError(f"points behind camera {camera!r}: depths {depth.tolist()}")
    focal = 0.5 * h / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    u = 0.5 * w + focal * local[:, 0] / depth
    v = 0.5 * h - focal * local[:, 1] / depth
    return np.stack([u, v], axis=-1)


class FastRenderer:
    """Offscreen frames of one size: buffer of that size, no MSAA, shadows, reflections,
    skybox. ``render(data, camera) -> (H, W, 3) uint8``."""

    def __init__(self, model: mujoco.MjModel, size: tuple[int, int]) -> None:
        h, w = size
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth, model.vis.global_.offheight = w, h  # read at creation
        try:
            self.renderer = mujoco.Renderer(model, height=h, width=w)
        except mujoco.FatalError as err:
            raise RuntimeError(
                f"cannot create an OpenGL context (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}):"
                " import envs before mujoco or set MUJOCO_GL=egl"
            ) from err
        flags = self.renderer.scene.flags
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
            flags[getattr(mujoco.mjtRndFlag, flag)] = False

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        self.renderer.update_scene(data, camera=camera)
        return self.renderer.render()

    def close(self) -> None:
        self.renderer.close()


class MetaWorldEnv(gym.Env):
    """One Meta-World task from one camera, with UniPi's observation and info conventions.

    Observation: {"image": (H, W, 3) uint8, "state": (4,) float32 hand xyz + gripper}.
    Action: (4,) float32 in [-1, 1]. Reward: 1.0 on success, else 0.0 (Meta-World's shaped
    reward is ``info["shaped_reward"]``). Never terminates.

    Args:
        task: one of ``TASKS`` ("door-open" or "door-open-v3").
        camera: one of ``CAMERAS``.
        render_mode: None or "rgb_array" (``render()`` returns render_size frames).
        image_size: (H, W) of observation images.
        render_size: (H, W) of ``render()`` frames.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "door-open",
        camera: str = "corner",
        render_mode: str | None = None,
        image_size: tuple[int, int] = (64, 64),
        render_size: tuple[int, int] = (128, 128),
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.task = task_name(task)
        self.camera = check_camera(camera)
        self.instruction = TASKS[self.task]
        self.render_mode = render_mode
        self.image_size = _check_size("image_size", image_size)
        self.render_size = _check_size("render_size", render_size)

        self.raw = make_raw_env(self.task)
        self.model, self.data = self.raw.model, self.raw.data
        self.rolled = roll_cameras_upright(self.model, self.data)
        logger.debug("cameras rolled upright: %s", self.rolled)
        self._renderers: dict[tuple[int, int], FastRenderer] = {}
        self._raw_obs: np.ndarray | None = None

        h, w = self.image_size
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    # -------------------------------------------------------------------- episode
    def _check_options(self, options: dict) -> None:
        unknown = set(options) - {"instruction", "split"}
        if unknown:
            raise ValueError(f"reset options {sorted(unknown)} unknown; accepted: "
                             "'instruction', 'split'")
        text = options.get("instruction")
        if text is not None and task_of_instruction(text) != self.task:
            raise ValueError(f"instruction {text!r} is not this env's task {self.task!r} "
                             f"({self.instruction!r}); make an env of that task")
        split = options.get("split", SPLIT)
        if split != SPLIT:
            raise ValueError(f"split={split!r}: Meta-World tasks are all {SPLIT!r} "
                             "(evaluation differs from training by seed)")

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode whose object and goal positions are a function of ``seed``.

        Args:
            seed: episode seed (gymnasium semantics; None draws one from the env's RNG).
            options: {"instruction": str} must name this env's task; {"split": "seen"}.
        """
        super().reset(seed=seed)
        self._check_options(options or {})
        episode_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        self.raw.seed(int(episode_seed))
        self._raw_obs, _ = self.raw.reset()
        return self._observation(), self._info(success=False, shaped=0.0)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action={action!r}: expected {ACTION_DIM} finite floats in "
                             "[-1, 1]")
        self._raw_obs, shaped, _, _, raw_info = self.raw.step(np.clip(action, -1.0, 1.0))
        success = bool(raw_info["success"])
        return (self._observation(), float(success), False, False,
                self._info(success, float(shaped)))

    def policy_observation(self) -> np.ndarray:
        """(39,) Meta-World observation (hand, gripper, objects, previous frame, goal), what
        Meta-World's scripted policies read."""
        if self._raw_obs is None:
            raise RuntimeError("call reset() before policy_observation()")
        return self._raw_obs.copy()

    # ------------------------------------------------------------------ rendering
    def render_frame(self, size: tuple[int, int]) -> np.ndarray:
        """(H, W, 3) uint8 frame of this env's camera at ``size``."""
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = FastRenderer(self.model, size)
        return renderer.render(self.data, self.camera)

    def render(self) -> np.ndarray | None:
        """(render_H, render_W, 3) uint8 frame when render_mode is "rgb_array"."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass 'rgb_array'")
            return None
        return self.render_frame(self.render_size)

    def _observation(self) -> dict[str, np.ndarray]:
        state = self._raw_obs[:STATE_DIM].astype(np.float32)
        return {"image": self.render_frame(self.image_size), "state": state}

    def _info(self, success: bool, shaped: float) -> dict[str, Any]:
        return {"instruction": self.instruction, "task": self.task, "split": SPLIT,
                "camera": self.camera, "success": bool(success), "shaped_reward": shaped}

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self.raw.close()


def register_envs() -> None:
    """Register ``unipi/MetaWorld-v0`` (kwarg ``task``) and ``unipi/MetaWorld-<task>-v0``."""
    ids = {ENV_ID: {}} | {f"unipi/MetaWorld-{t}-v0": {"task": t} for t in TASK_NAMES}
    for env_id, kwargs in ids.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="envs.metaworld:MetaWorldEnv", kwargs=kwargs,
                         max_episode_steps=MAX_EPISODE_STEPS)


def make_metaworld_env(task: str, camera: str = "corner", **kwargs) -> gym.Env:
    """``gymnasium.make`` of ``task`` seen from ``camera``; kwargs go to MetaWorldEnv (and
    ``max_episode_steps`` to the TimeLimit)."""
    register_envs()
    return gym.make(ENV_ID, task=task_name(task), camera=check_camera(camera), **kwargs)
