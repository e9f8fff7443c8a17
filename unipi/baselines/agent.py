"""The BC policy acting in the tabletop envs, behind the same interface as ``UniPiAgent``.

    from unipi.baselines.agent import load_bc_agent
    agent = load_bc_agent("runs/bc")
    result = agent.run_episode(env, seed=eval_seed(0), split="novel")

One episode::

    1. observe the camera frame (and state); keep the last ``history`` frames
    2. predict the next ``chunk`` actions from them and the instruction
    3. execute the first ``execute`` of them
    4. repeat from 1, until success (+ ``agent.steps_after_success``) or the step limit

The stopping rule and the step limit are the UniPi agent's closed loop (``agent``
section of the model's config), so both are scored by the same protocol.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unipi.agent import EpisodeResult, _episode_limit, _Recorder, _reset


def is_bc_model_dir(model: str | os.PathLike | None) -> bool:
    """True for a folder written by ``unipi train bc`` (config.json + bc/, no planner/)."""
    if model is None:
        return False
    path = Path(model)
    return (path / "bc" / "config.json").is_file() and not (path / "planner").is_dir()


class BCAgent:
    """A ``BCPolicy`` with its frozen text encoder, acting in a ``unipi/*-v0`` env.

    Args:
        policy: ``BCPolicy`` (``unipi.baselines.bc``).
        text_encoder: the ``TextEncoder`` the policy was trained with.
        execute: actions executed per query (<= the policy's ``chunk``).
        max_steps: step cap; 0 = the env's ``max_episode_steps``.
        steps_after_success: keep acting this many steps after the first success.
    """

    def __init__(self, policy, text_encoder, execute: int, max_steps: int = 0,
                 steps_after_success: int = 0) -> None:
        chunk = policy.config.chunk
        if not 1 <= execute <= chunk:
            raise ValueError(f"execute={execute}: must be in [1, chunk={chunk}]")
        self.policy, self.text_encoder, self.execute = policy.eval(), text_encoder, execute
        self.max_steps, self.steps_after_success = max_steps, steps_after_success

    def act(self, history: list[np.ndarray], state: np.ndarray, instruction: str) -> np.ndarray:
        """The next ``chunk`` actions, float32 (chunk, 4), from frames (H, W, 3) oldest first."""
        text, mask = self.text_encoder.encode([instruction])
        frames = np.stack(history)[None]  # (1, history, H, W, 3)
        return self.policy.predict(frames, text, mask, np.asarray(state)[None])[0]

    def run_episode(self, env, seed: int, instruction: str | None = None, split: str = "seen",
                    max_steps: int | None = None, record: bool = True, render: bool = False,
                    generator_seed: int | None = None) -> EpisodeResult:
        """Run one seeded episode (the policy is deterministic: ``generator_seed`` is unused)."""
        obs, info = _reset(env, seed, instruction, split)
        rec = _Recorder(env, obs, info, seed, split, record, render)
        limit = _episode_limit(env, self.max_steps, max_steps)
        history = [obs["image"]] * self.policy.config.history
        queue: list[np.ndarray] = []
        while rec.result.steps < limit:
            # 1-3. query the policy when the executed part of the last chunk is used up
            if not queue:
                queue = list(self.act(history, obs["state"], rec.result.instruction)
                             [: self.execute])
                rec.result.num_plans += 1
            obs, _, terminated, truncated, info = env.step(queue.pop(0))
            rec.observe(obs, info, None)
            history = history[1:] + [obs["image"]]

            # 4. the UniPi agent's closed-loop stopping rule
            first = rec.result.first_success_step
            if first is not None and rec.result.steps - first >= self.steps_after_success:
                break
            if terminated or truncated:
                break
        return rec.finish()


def load_bc_agent(model: str | os.PathLike, device: str = "cpu") -> tuple[BCAgent, object]:
    """(agent, ExperimentConfig) of a BC model folder."""
    from unipi.baselines.bc import BCPolicy
    from unipi.model_dir import load_model_config
    from unipi.planner.text import TextEncoder

    if not is_bc_model_dir(model):
        raise FileNotFoundError(f"{str(model)!r} is not a BC model folder (config.json and "
                                "bc/ written by `unipi train bc --out DIR`)")
    cfg = load_model_config(model)
    policy = BCPolicy.from_pretrained(Path(model) / "bc").to(device)
    text_encoder = TextEncoder.from_config(cfg.text_encoder)
    if text_encoder.dim != policy.config.text_dim:
        raise ValueError(f"text encoder {cfg.text_encoder.type!r} gives {text_encoder.dim}-d "
                         f"features; the policy in {str(model)!r} expects "
                         f"{policy.config.text_dim}")
    agent = BCAgent(policy, text_encoder, cfg.bc.execute, max_steps=cfg.agent.max_steps,
                    steps_after_success=cfg.agent.steps_after_success)
    return agent, cfg
