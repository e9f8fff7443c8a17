"""Meta-World's own scripted policies as the expert of the Meta-World envs.

Each v3 task has a hand-written policy in ``metaworld.policies`` that reads the 39-d
Meta-World observation (``MetaWorldEnv.policy_observation()``)::

    from envs.metaworld import make_metaworld_env
    from envs.metaworld_expert import run_expert_episode
    episode = run_expert_episode(make_metaworld_env("door-open", "corner3"), seed=3)
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from envs.metaworld import INSTALL_HINT, MetaWorldEnv, task_name


def scripted_policy(task: str):
    """Meta-World's scripted policy of ``task`` (``policy.get_action(obs39) -> (4,)``)."""
    name = "Sawyer" + "".join(w.title() for w in task_name(task).split("-")) + "V3Policy"
    try:
        from metaworld import policies
    except ImportError as err:
        raise ImportError(f"Meta-World is not installed: {INSTALL_HINT}") from err
    return getattr(policies, name)()


class MetaWorldExpert:
    """The scripted policy of the env's task behind ``act(obs) -> (4,) float32`` in
    [-1, 1] (what the env executes). Call ``reset(env)`` after ``env.reset(...)``."""

    def __init__(self) -> None:
        self.env: MetaWorldEnv | None = None
        self.policy = None

    def reset(self, env: gym.Env) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, MetaWorldEnv):
            raise TypeError(f"MetaWorldExpert needs a MetaWorldEnv, got "
                            f"{type(unwrapped).__name__}")
        self.env, self.policy = unwrapped, scripted_policy(unwrapped.task)

    def act(self, obs: Any = None) -> np.ndarray:
        """Next action; ``obs`` is unused (the policy reads the simulator's observation)."""
        if self.env is None:
            raise RuntimeError("call MetaWorldExpert.reset(env) before act()")
        with warnings.catch_warnings():  # the policies warn whenever they saturate
            warnings.filterwarnings("ignore", message="Constant.* may be too high")
            action = self.policy.get_action(self.env.policy_observation())
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)


def make_expert_policy(env: gym.Env) -> Callable[[Any], np.ndarray]:
    """``policy(obs) -> action`` for ``unipi.agent.ExpertAgent(make_policy=...)``."""
    expert = MetaWorldExpert()
    expert.reset(env)
    return expert.act


def run_expert_episode(env: gym.Env, seed: int, max_steps: int = 128,
                       hold_after_success: bool = True) -> dict[str, Any]:
    """Run the scripted policy for exactly ``max_steps`` steps from ``reset(seed=seed)``.

    With ``hold_after_success`` the hand stops at the first success (zero motion, the same
    gripper effort), so the rest of the episode shows the goal state at rest; the
    scripted policies would otherwise push on (the button, the door) past it.
    ``success`` is the protocol's: ``info["success"]`` at some step. (Some states are
    passed through, not held: handle-press's handle falls on past its goal height.)

    Returns:
        {"frames": (T+1, H, W, 3) uint8 (frame t is seen before action t),
         "actions": (T, 4) float32, "states": (T+1, 4) float32,
         "success": bool, "first_success_step": first step (1-based) with success or -1,
         "success_at_end": bool, "instruction": str, "split": str, "seed": int,
         "task": str, "camera": str}
    """
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}: expected >= 1")
    obs, info = env.reset(seed=seed)
    act = make_expert_policy(env)
    frames, states, actions = [obs["image"]], [obs["state"]], []
    first = -1
    for t in range(max_steps):
        action = act(obs)
        if hold_after_success and first > 0:
            action = np.array([0.0, 0.0, 0.0, actions[first - 1][3]], dtype=np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs["image"])
        states.append(obs["state"])
        actions.append(action)
        if info["success"] and first < 0:
            first = t + 1
        if (terminated or truncated) and t + 1 < max_steps:
            raise RuntimeError(f"episode ended at step {t + 1} < {max_steps=}; raise "
                               "max_episode_steps")
    return {
        "frames": np.stack(frames),
        "actions": np.stack(actions).astype(np.float32),
        "states": np.stack(states).astype(np.float32),
        "success": first > 0,
        "first_success_step": first,
        "success_at_end": bool(info["success"]),
        "instruction": info["instruction"],
        "split": info["split"],
        "seed": int(seed),
        "task": info["task"],
        "camera": info["camera"],
    }
