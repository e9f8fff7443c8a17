"""The closed-loop UniPi agent: plan a video, read actions off it, act, re-plan.

    from unipi.agent import UniPiAgent
    agent = UniPiAgent(UniPiPipeline.from_pretrained("runs/planner"),
                       InverseDynamicsModel.from_pretrained("runs/idm/idm"), AgentConfig())
    result = agent.run_episode(env, seed=eval_seed(0), split="novel")

One episode (paper, Sec. 3 "Decision Making as Text-Conditioned Video Generation")::

    1. observe x_0 (the planner-resolution camera image) and the instruction c
    2. plan     tau = (x_0, x_1, ..., x_{F-1}) ~ p(tau | x_0, c)     planner(image, [c])
    3. act      a_{t..t+k-1} = IDM(x_i, x_{i+1}) for each consecutive pair, k = chunk
    4. execute  the first ``replan_every`` actions, or fewer when the arm stalls
    5. repeat from 1 with the new observation, until success or the step limit

``track_plan=True`` reads each chunk after the first off (current observation, next
planned frame) instead of (planned frame, next planned frame), so the executed
trajectory is pulled back toward the plan when it drifts.

``open_loop=True`` is the paper's protocol: plan once, execute every action of that
plan, and end the episode there (no re-planning, no holding); success is read at the
last executed step. In closed loop the episode ends at first success (plus
``steps_after_success``) or at the step limit. The planner's generator is seeded from
the episode seed, so the same seed gives the same episode.

``max_plans > 0`` caps the plans of an episode (re-plans on stalls count too); once they
are spent the agent keeps steering toward the last planned frame, IDM(observation, last
frame), as AVDC's agents do after their last re-plan.

Behaviour modulation (``unipi.planner.constraints``): with a goal image (``run_episode(
goal_image=)``, or ``agent.goal_from_env`` with the ``goal`` provider, by default the
scripted expert's final frame from the same start, ``unipi.goal.ExpertGoal``) every
plan of the episode ends at that same image; with ``guide`` (a frame classifier) and
``agent.guide_weight`` every plan is steered toward ``agent.guide_target``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from unipi.agent_config import AgentConfig


class Planner(Protocol):
    def __call__(self, image: np.ndarray, instruction: list[str], num_inference_steps: int,
                 guidance_scale: float, generator: torch.Generator | None) -> Any: ...


@dataclass
class EpisodeResult:
    """What happened in one episode.

    Arrays: ``plans[j]`` uint8 (F, H, W, 3), the j-th imagined video; ``frames`` uint8
    (T+1, H, W, 3), observations at planner resolution (frame 0 before any action);
    ``renders`` uint8 (T+1, 128, 128, 3) from ``env.render()`` when recorded;
    ``plan_index[t] = (j, i)``: action t was the i-th action of plan j.
    """

    success: bool
    steps: int
    wall_time: float
    instruction: str
    split: str
    seed: int
    first_success_step: int | None = None
    num_plans: int = 0
    replans_on_stall: int = 0
    plans: list[np.ndarray] = field(default_factory=list)
    frames: np.ndarray | None = None
    renders: np.ndarray | None = None
    plan_index: list[tuple[int, int]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The JSON-able part (no arrays)."""
        skip = {"plans", "frames", "renders", "plan_index"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


class _Recorder:
    """Collects frames, success and timing while an episode runs."""

    def __init__(self, env, obs: dict, info: dict, seed: int, split: str, record: bool,
                 render: bool) -> None:
        self.env, self.record, self.render = env, record, render
        self.start = time.perf_counter()
        self.result = EpisodeResult(
            success=bool(info.get("success", False)), steps=0, wall_time=0.0,
            instruction=str(info["instruction"]), split=str(info.get("split", split)),
            seed=int(seed),
        )
        self.frames = [obs["image"].copy()] if record else []
        self.renders = [env.render()] if record and render else []

    def observe(self, obs: dict, info: dict, plan_pos: tuple[int, int] | None) -> None:
        r = self.result
        r.steps += 1
        r.success = bool(info["success"])
        if r.success and r.first_success_step is None:
            r.first_success_step = r.steps
        if self.record:
            self.frames.append(obs["image"].copy())
            if plan_pos is not None:
                r.plan_index.append(plan_pos)
            if self.render:
                self.renders.append(self.env.render())

    def finish(self) -> EpisodeResult:
        r = self.result
        r.wall_time = time.perf_counter() - self.start
        if self.record:
            r.frames = np.stack(self.frames)
            r.renders = np.stack(self.renders) if self.renders else None
        return r


def _episode_limit(env, cfg_max: int, max_steps: int | None) -> int:
    if max_steps:
        return int(max_steps)
    if cfg_max:
        return int(cfg_max)
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None)
    if not limit:
        raise ValueError("the env has no max_episode_steps; pass max_steps or agent.max_steps")
    return int(limit)


def _reset(env, seed: int, instruction: str | None, split: str):
    options = {"instruction": instruction} if instruction is not None else {"split": split}
    return env.reset(seed=int(seed), options=options)


def _planner_spacing(planner) -> int | None:
    """Env steps between planned frames if the planner tells: ``frame_spacing``, or
    ``frame_stride // tsr_factor`` of ``planner.planner`` (UniPiPipeline) or
    ``planner.config``; None for planners that do not say."""
    spacing = getattr(planner, "frame_spacing", None)
    if spacing is not None:
        return int(spacing)
    for cfg in (getattr(planner, "planner", None), getattr(planner, "config", None)):
        stride, factor = getattr(cfg, "frame_stride", None), getattr(cfg, "tsr_factor", None)
        if stride is not None and factor:
            return int(stride) // int(factor)
    return None


class UniPiAgent:
    """Planner + inverse dynamics, acting in a gymnasium env of the ``envs`` package.

    Args:
        planner: callable like ``UniPiPipeline``: ``planner(image (B, H, W, 3) uint8,
            [instruction], num_inference_steps=, guidance_scale=, generator=)`` returning
            an object with ``.videos`` uint8 (B, F, H, W, 3), frame 0 = the input image.
        idm: ``InverseDynamicsModel`` whose ``chunk`` equals the planner's frame spacing.
        cfg: ``AgentConfig``.
        guide: a differentiable frame classifier for ``agent.guide_weight`` (or None).
        goal: ``goal(env, seed, instruction, split) -> uint8 (H, W, 3)`` for
            ``agent.goal_from_env``; default ``unipi.goal.ExpertGoal()``.
    """

    def __init__(self, planner: Planner, idm, cfg: AgentConfig | None = None, guide=None,
                 goal: Callable | None = None) -> None:
        self.planner, self.idm, self.cfg = planner, idm, cfg or AgentConfig()
        self.guide, self.goal = guide, goal
        if self.cfg.guide_weight and guide is None:
            raise ValueError(f"agent.guide_weight={self.cfg.guide_weight} needs a classifier: "
                             "UniPiAgent(..., guide=load_classifier(DIR)) or --guide DIR")
        if self.cfg.goal_from_env and self.goal is None:
            from unipi.goal import ExpertGoal

            self.goal = ExpertGoal()
        spacing = _planner_spacing(planner)
        if spacing is not None and spacing != idm.config.chunk:
            raise ValueError(
                f"planned frames are {spacing} env steps apart but the IDM predicts "
                f"chunk={idm.config.chunk} actions per pair; train the IDM with the "
                "planner's frame_stride // tsr_factor"
            )

    def plan(self, image: np.ndarray, instruction: str, generator: torch.Generator,
             goal: np.ndarray | None = None):
        """One imagined video, uint8 (F, H, W, 3), and its actions (N, 4), N = (F-1)*chunk.

        ``goal`` uint8 (H, W, 3): the plan's last frame is pinned to it."""
        out = self.planner(
            image[None], [instruction], num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=self.cfg.guidance_scale, generator=generator,
            **self._constraints(goal),
        )
        video = np.asarray(out.videos[0])
        if video.ndim != 4 or video.shape[1:] != image.shape:
            raise ValueError(
                f"planner returned a video of shape {video.shape}; expected (F, *{image.shape})"
            )
        actions = self.idm.predict(video[:-1], video[1:])  # (F-1, chunk, 4)
        return video, actions.reshape(-1, actions.shape[-1])

    def _constraints(self, goal: np.ndarray | None) -> dict:
        """Planner keyword arguments of the goal and guidance asked for (none: {})."""
        cfg, kwargs = self.cfg, {}
        if goal is not None:
            kwargs.update(goal_image=goal[None], goal_guidance=cfg.goal_guidance)
        if cfg.guide_weight:
            kwargs.update(guide=self.guide, guide_weight=cfg.guide_weight,
                          guide_target=cfg.guide_target or None)
        return kwargs

    def _stalled(self, states: list[np.ndarray]) -> bool:
        k = self.cfg.stall_window
        if k == 0 or len(states) <= k:
            return False
        return float(np.abs(states[-1] - states[-1 - k]).max()) < self.cfg.stall_eps

    def run_episode(
        self,
        env,
        seed: int,
        instruction: str | None = None,
        split: str = "seen",
        max_steps: int | None = None,
        record: bool = True,
        render: bool = False,
        generator_seed: int | None = None,
        goal_image: np.ndarray | None = None,
    ) -> EpisodeResult:
        """Run one seeded episode; see the module docstring for the loop.

        Args:
            env: a ``unipi/*-v0`` env (obs ``{"image", "state"}``, ``info["success"]``).
            seed: env seed; also seeds the planner unless ``generator_seed`` is given.
            instruction: the task to ask for; ``None`` lets the env draw one from ``split``.
            max_steps: step cap; default ``agent.max_steps`` or the env's limit.
            record: keep plans and executed frames; ``render`` also keeps 128x128 renders.
            goal_image: uint8 (H, W, 3) every plan ends at; default: from the ``goal``
                provider when ``agent.goal_from_env``, else none.
        """
        cfg = self.cfg
        if goal_image is None and cfg.goal_from_env:
            goal_image = self.goal(env, seed, instruction, split)  # runs its own reset
        obs, info = _reset(env, seed, instruction, split)
        rec = _Recorder(env, obs, info, seed, split, record, render)
        g = torch.Generator().manual_seed(int(seed if generator_seed is None else generator_seed))
        limit = _episode_limit(env, cfg.max_steps, max_steps)
        queue: list[np.ndarray] = []
        states = [np.asarray(obs["state"], dtype=np.float32)]
        plan_no, in_plan = -1, 0
        video, target, plan_left = None, 0, 0
        while rec.result.steps < limit:
            # 3b. tracking: the next chunk leads from what the camera sees to the next
            # planned frame, so drift between plan and execution is corrected
            if not queue and plan_left > 0 and target < len(video):
                chunk = self.idm.predict(obs["image"], video[target])
                queue = list(chunk[: min(len(chunk), plan_left)])
                plan_left -= len(queue)
                target += 1

            # 3c. plan budget spent (agent.max_plans): steer toward the last planned frame
            if (not queue and cfg.max_plans and not cfg.open_loop
                    and rec.result.num_plans >= cfg.max_plans):
                queue = list(self.idm.predict(obs["image"], video[-1]))

            # 1-3. (re-)plan from the current observation when the queue is empty
            if not queue:
                if cfg.open_loop and plan_no >= 0:
                    break
                video, actions = self.plan(obs["image"], rec.result.instruction, g, goal_image)
                plan_no, in_plan = plan_no + 1, 0
                rec.result.num_plans += 1
                if record:
                    rec.result.plans.append(video)
                budget = len(actions) if cfg.open_loop else min(cfg.replan_every, len(actions))
                first_chunk = budget if not cfg.track_plan else min(budget, self.idm.config.chunk)
                queue = list(actions[:first_chunk])
                plan_left, target = budget - first_chunk, 2
                states = states[-1:]

            # 4. execute one action
            obs, _, terminated, truncated, info = env.step(queue.pop(0))
            rec.observe(obs, info, (plan_no, in_plan))
            in_plan += 1
            states.append(np.asarray(obs["state"], dtype=np.float32))

            # 5. stop at success (+ margin) or when the env ends the episode
            first = rec.result.first_success_step
            if first is not None and not cfg.open_loop:
                if rec.result.steps - first >= cfg.steps_after_success:
                    break
            if terminated or truncated:
                break
            if queue and not cfg.open_loop and self._stalled(states):
                queue, plan_left = [], 0
                rec.result.replans_on_stall += 1
        return rec.finish()


class ExpertAgent:
    """The scripted expert behind the same ``run_episode`` interface as ``UniPiAgent``,
    so evaluation can report the expert's success rate beside the agent's.

    Args:
        make_policy: ``make_policy(env) -> policy`` with ``policy(obs) -> action``, built
            after each reset; default: ``envs.expert``'s scripted expert.
    """

    def __init__(self, make_policy: Callable | None = None, max_steps: int = 0) -> None:
        self.make_policy = make_policy or _default_expert
        self.max_steps = max_steps

    def run_episode(self, env, seed: int, instruction: str | None = None, split: str = "seen",
                    max_steps: int | None = None, record: bool = True, render: bool = False,
                    generator_seed: int | None = None) -> EpisodeResult:
        obs, info = _reset(env, seed, instruction, split)
        rec = _Recorder(env, obs, info, seed, split, record, render)
        policy = self.make_policy(env)
        limit = _episode_limit(env, self.max_steps, max_steps)
        while rec.result.steps < limit:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            rec.observe(obs, info, None)
            if rec.result.first_success_step is not None or terminated or truncated:
                break  # the same stopping rule as the agent's closed loop
        return rec.finish()


def _default_expert(env):
    from envs.expert import ScriptedExpert

    expert = ScriptedExpert()
    expert.reset(env)
    return expert.act
