"""Settings of the closed-loop agent (owned by ``unipi.agent``, section ``agent``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


def _error(message: str) -> ValueError:
    from unipi.config import ConfigError  # late: unipi.config imports this module

    return ConfigError(message)


@dataclass
class AgentConfig:
    replan_every: int = 16  # env steps executed from one plan before re-planning
    open_loop: bool = False  # plan once, execute the whole plan, stop (paper's protocol)
    track_plan: bool = False  # IDM on (observed frame, next planned frame) after chunk 1
    num_inference_steps: int = 20
    guidance_scale: float = 2.0
    # Re-plan early when the state (end-effector xyz + gripper) moved less than
    # stall_eps (max abs change) over the last stall_window steps; 0 turns it off.
    stall_window: int = 4
    stall_eps: float = 1e-3
    steps_after_success: int = 0  # keep acting this many steps after first success
    max_steps: int = 0  # episode step cap; 0 = the env's max_episode_steps
    # Plans per episode (the first plus re-plans); 0 = unlimited. Once spent, the agent
    # steers toward the last planned frame. AVDC's Meta-World protocol: 6 (5 re-plans).
    max_plans: int = 0
    # Behaviour modulation (unipi.planner.constraints). goal_from_env: every plan's last
    # frame is pinned to the goal the env renders for the episode (unipi.goal: the
    # scripted expert's final frame from the same start), the same goal at every re-plan;
    # goal_guidance > 0 adds reconstruction guidance toward it. guide_weight steers plans
    # with the classifier given to UniPiAgent(guide=...) toward class guide_target
    # ("" = the classifier's default class).
    goal_from_env: bool = False
    goal_guidance: float = 0.0
    guide_weight: float = 0.0
    guide_target: str = ""

    def __post_init__(self) -> None:
        if self.replan_every < 1:
            raise _error(f"agent.replan_every={self.replan_every}: must be >= 1 env step")
        if self.num_inference_steps < 1:
            raise _error(
                f"agent.num_inference_steps={self.num_inference_steps}: must be >= 1"
            )
        if self.guidance_scale < 0:
            raise _error(f"agent.guidance_scale={self.guidance_scale}: must be >= 0")
        if self.stall_window < 0:
            raise _error(f"agent.stall_window={self.stall_window}: must be >= 0 (0 = off)")
        if self.stall_eps < 0:
            raise _error(f"agent.stall_eps={self.stall_eps}: must be >= 0")
        if self.steps_after_success < 0:
            raise _error(
                f"agent.steps_after_success={self.steps_after_success}: must be >= 0"
            )
        if self.max_steps < 0:
            raise _error(f"agent.max_steps={self.max_steps}: must be >= 0 (0 = env limit)")
        if self.max_plans < 0:
            raise _error(f"agent.max_plans={self.max_plans}: must be >= 0 (0 = unlimited)")
        if not self.goal_guidance >= 0:
            raise _error(f"agent.goal_guidance={self.goal_guidance}: must be >= 0 (0 = pin only)")
        if not math.isfinite(self.guide_weight):
            raise _error(f"agent.guide_weight={self.guide_weight}: must be a finite number")
