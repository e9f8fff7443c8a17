"""Scripted pick-and-place expert for the tabletop, using simulator truth.

It drives the ee through waypoints with a proportional controller on the commanded
ee position and outputs actions in the env's own action space::

    approach (above block) -> descend, suction on -> lift -> carry (above target)
    -> lower -> release -> retreat (lift) -> done (zero actions)

Demonstrations for the data collector::

    from envs.expert import run_expert_episode
    episode = run_expert_episode(envs.make_env("place"), seed=3)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.tabletop import BLOCK_HALF, HOVER_Z, TabletopEnv
from envs.tasks import Task

PHASES = ("approach", "descend", "lift", "carry", "lower", "release", "retreat", "done")
REACHED_XY = 0.004  # actual ee within this of a waypoint in xy (m)
REACHED_Z = 0.004
CLEAR_Z = HOVER_Z - 0.01  # once this high while lifting, start moving sideways
GRASP_GAP = 0.002  # cup stops this far above the block top; suction bridges the gap
DROP_GAP = 0.003  # a carried block is released this far above where it rests
MAX_DESCEND_STEPS = 12  # give up waiting for suction and retry from above


class ScriptedExpert:
    """Waypoint expert; `act` returns (4,) float32 actions in [-1, 1].

    Usage: ``expert.reset(env)`` after ``env.reset(...)``, then ``expert.act(obs)``
    each step. `env` may be wrapped; the expert reads ``env.unwrapped``.
    """

    def __init__(self) -> None:
        self.env: TabletopEnv | None = None
        self.phase = "done"
        self._phase_steps = 0
        self._grip_offset = np.zeros(2)

    def reset(self, env: gym.Env) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, TabletopEnv):
            raise TypeError(f"ScriptedExpert needs a TabletopEnv, got {type(unwrapped).__name__}")
        if unwrapped.task is None:
            raise RuntimeError("reset the env before the expert")
        self.env = unwrapped
        self._set_phase("approach")

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self._phase_steps = 0

    def _action(self, goal: np.ndarray, suction: bool) -> np.ndarray:
        """P-control of the commanded ee position toward `goal` (3,)."""
        assert self.env is not None
        delta = (goal - self.env.commanded_position()) / self.env.max_delta
        action = np.append(np.clip(delta, -1.0, 1.0), 1.0 if suction else -1.0)
        return action.astype(np.float32)

    def _reached(self, goal: np.ndarray, check_z: bool = True) -> bool:
        assert self.env is not None
        ee = self.env.ee_position()
        ok_xy = np.linalg.norm(ee[:2] - goal[:2]) < REACHED_XY
        return bool(ok_xy and (not check_z or abs(ee[2] - goal[2]) < REACHED_Z))

    def act(self, obs: Any = None) -> np.ndarray:
        """Next action; `obs` is unused (the expert reads simulator state)."""
        if self.env is None:
            raise RuntimeError("call ScriptedExpert.reset(env) before act()")
        env = self.env
        task: Task = env.task
        block = env.privileged_state()["blocks"][task.block]
        ee = env.ee_position()
        self._phase_steps += 1

        # Each phase either hands over to the next one (re-evaluated at once) or acts.
        for _ in range(len(PHASES)):
            phase = self.phase
            if phase == "approach":
                goal = np.array([block[0], block[1], HOVER_Z])
                if self._reached(goal, check_z=False):
                    self._set_phase("descend")
                    continue
                return self._action(goal, suction=False)
            if phase == "descend":
                goal = np.array([block[0], block[1], block[2] + BLOCK_HALF + GRASP_GAP])
                if env.privileged_state()["holding"] == task.block:
                    self._grip_offset = block[:2] - ee[:2]
                    self._set_phase("lift")
                    continue
                if self._phase_steps > MAX_DESCEND_STEPS:
                    self._set_phase("approach")
                    continue
                return self._action(goal, suction=True)
            if phase == "lift":
                goal = np.array([ee[0], ee[1], HOVER_Z])
                if ee[2] > CLEAR_Z:
                    self._set_phase("carry")
                    continue
                return self._action(goal, suction=True)
            if phase == "carry":
                target = env.target_position()
                goal = np.array([*(target[:2] - self._grip_offset), HOVER_Z])
                if self._reached(goal, check_z=False):
                    self._set_phase("lower")
                    continue
                return self._action(goal, suction=True)
            if phase == "lower":
                target = env.target_position()
                xy = target[:2] - self._grip_offset
                goal = np.array([*xy, target[2] + BLOCK_HALF + DROP_GAP])
                if self._reached(goal):
                    self._set_phase("release")
                    continue
                return self._action(goal, suction=True)
            if phase == "release":
                self._set_phase("retreat")
                return self._action(env.commanded_position(), suction=False)
            if phase == "retreat":
                goal = np.array([ee[0], ee[1], HOVER_Z])
                if self._reached(goal):
                    self._set_phase("done")
                    continue
                return self._action(goal, suction=False)
            return np.zeros(4, dtype=np.float32)
        raise RuntimeError(f"expert phases did not settle (phase={self.phase!r})")


def run_expert_episode(
    env: gym.Env,
    seed: int,
    instruction: str | Task | None = None,
    max_steps: int = 64,
    split: str = "seen",
) -> dict[str, Any]:
    """Run the expert for exactly `max_steps` steps (it holds still once done).

    Args:
        env: a tabletop env (wrapped or not) whose max_episode_steps >= max_steps.
        seed: episode seed; instruction: fixes the task, else one is drawn from `split`.

    Returns:
        {"frames": (T+1, H, W, 3) uint8 (frame t is seen before action t),
         "actions": (T, 4) float32, "states": (T+1, 4) float32,
         "success": bool at the last step, "done_step": step at which the expert
         finished (or -1), "instruction": str, "split": str, "seed": int}
    """
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}: expected >= 1")
    options = {"instruction": instruction} if instruction is not None else {"split": split}
    obs, info = env.reset(seed=seed, options=options)
    expert = ScriptedExpert()
    expert.reset(env)
    frames, states, actions = [obs["image"]], [obs["state"]], []
    done_step = -1
    for t in range(max_steps):
        action = expert.act(obs)
        if expert.done and done_step < 0:
            done_step = t
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs["image"])
        states.append(obs["state"])
        actions.append(action)
        if (terminated or truncated) and t + 1 < max_steps:
            raise RuntimeError(
                f"episode ended at step {t + 1} < {max_steps=}; raise max_episode_steps"
            )
    return {
        "frames": np.stack(frames),
        "actions": np.stack(actions).astype(np.float32),
        "states": np.stack(states).astype(np.float32),
        "success": bool(info["success"]),
        "done_step": done_step,
        "instruction": info["instruction"],
        "split": info["split"],
        "seed": seed,
    }
