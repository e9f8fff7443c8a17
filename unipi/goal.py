"""Goal configurations rendered from the env, for goal-conditioned plans and episodes.

    goal = expert_goal(env, seed=3, instruction="place the red block in the blue bowl")
    pipe(obs, instruction, goal_image=goal.image)         # the plan ends at goal.image
    goal_reached(env, goal)                                # after acting: there yet?

The goal of a start state is where the scripted expert leaves the scene from the same
(seed, instruction): it runs ``max_steps`` steps (64, the demonstrations' length; the
expert is done after 30-50 and then holds still above the placed block), and its last
observation is the goal image. "Reaching the goal configuration" is read from the
simulator: every block within ``tol`` metres (xy) of where it is in the goal state,
and no block held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GOAL_STEPS = 64  # expert steps to the goal state (unipi collect's episode length)
GOAL_TOL = 0.03  # metres, per block in xy (the env's tolerance for unmoved blocks)


@dataclass
class GoalState:
    """A goal configuration: ``image`` uint8 (H, W, 3) at the env's observation size,
    ``blocks`` {colour: (3,) centre}, and whether the expert achieved the instruction."""

    image: np.ndarray
    blocks: dict[str, np.ndarray]
    expert_success: bool
    instruction: str


def expert_goal(env, seed: int, instruction: str | None = None, split: str = "seen",
                max_steps: int = GOAL_STEPS) -> GoalState:
    """Run the scripted expert from (seed, instruction) and return its final state.

    Leaves ``env`` at that final state; reset it before acting from the start again.
    """
    from envs.expert import run_expert_episode

    ep = run_expert_episode(env, int(seed), instruction=instruction, max_steps=max_steps,
                            split=split)
    blocks = env.unwrapped.privileged_state()["blocks"]
    return GoalState(image=ep["frames"][-1], blocks={c: p.copy() for c, p in blocks.items()},
                     expert_success=bool(ep["success"]), instruction=str(ep["instruction"]))


def goal_distance(env, goal: GoalState) -> float:
    """Largest xy distance (m) of any block from its place in ``goal``."""
    now = env.unwrapped.privileged_state()["blocks"]
    return max(float(np.linalg.norm(now[c][:2] - p[:2])) for c, p in goal.blocks.items())


def goal_reached(env, goal: GoalState, tol: float = GOAL_TOL) -> bool:
    """Whether ``env``'s scene is now in the goal configuration (see the module docs)."""
    held = env.unwrapped.privileged_state()["holding"] is not None
    return not held and goal_distance(env, goal) <= tol


class ExpertGoal:
    """``goal(env, seed, instruction, split) -> uint8 (H, W, 3)``: the agent's goal
    provider for ``agent.goal_from_env`` (the expert's final frame, see above)."""

    def __init__(self, max_steps: int = GOAL_STEPS) -> None:
        self.max_steps = max_steps

    def __call__(self, env, seed: int, instruction: str | None, split: str) -> np.ndarray:
        return expert_goal(env, seed, instruction, split, self.max_steps).image
