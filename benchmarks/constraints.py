"""Does flexible behaviour modulation work? Goal images and classifier guidance, measured.

    python benchmarks/constraints.py --model MODEL_DIR --classifier runs/tabletop_classifier
    python benchmarks/constraints.py --tiny          # CI: tiny folders, two start states

Over a fixed set of start states (evaluation seeds ``unipi.evaluate.cell_seed``, the
instructions cycling through the split's tasks, as ``unipi eval`` does):

(a) goal image. The goal is the scripted expert's final frame from the same start
    (``unipi.goal.expert_goal``). Every start state is planned unconstrained and with
    the goal pinned (and with reconstruction guidance if ``--goal-guidance``), under
    the same seed. Measured: pixel MSE ([0, 1] units) of the last frame and of the
    frame before it to the goal; the mean absolute error of the frame before the last
    on the pixels where the goal differs from the observation; and whether the moved
    block, read off the frame by colour (``PlanScorer.locate``), lies within
    ``--goal-tol`` of where it is in the goal state ("reaches the goal"). The pinned
    last frame is the goal exactly, so the frame before it is the informative one;
    the reader's own accuracy is its score on the goal images themselves.
(b) classifier guidance. Start states whose instruction moves the classifier's block;
    for each class and each ``--weights`` value, the fraction of plans whose last frame
    has that class, read by colour (``unipi.classifier.labels.judge_frame``, which the
    guidance did not optimise) and by the classifier itself; weight 0 is unguided.
    The instruction fixes where the block goes, so guidance has to overrule it; with
    ``--guide-cfg-scale 0`` the plans come from the unconditional model instead and
    the classifier alone says what should happen.
(c) the agent. Closed-loop episodes with and without the goal pinned at every re-plan;
    "reaches the goal" = every block within ``--goal-tol`` of its goal position and
    nothing held, read from the simulator when the episode ends.

Prints the tables and writes ``<out>/constraints.json``, ``<out>/goal_side_by_side.mp4``
(observation | unconstrained plan | goal-pinned plan | goal) and
``<out>/guide_side_by_side.mp4`` (observation | unguided | guided toward each class).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
logger = logging.getLogger("constraints")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder (config.json, planner/, idm/)")
    p.add_argument("--classifier", default=None, help="classifier folder for part (b)")
    p.add_argument("--families", default="place,relation")
    p.add_argument("--split", default="seen", help="seen | novel")
    p.add_argument("--episodes", type=int, default=8, help="start states per family")
    p.add_argument("--agent-episodes", type=int, default=None,
                   help="agent episodes per family and variant (default --episodes; 0: skip)")
    p.add_argument("--weights", default="1,3,10", help="classifier-guidance weights")
    p.add_argument("--guide-cfg-scale", type=float, default=None,
                   help="classifier-free guidance scale of part (b) (default: the model's); "
                        "0 = the unconditional model, so the classifier alone sets the task")
    p.add_argument("--goal-guidance", type=float, default=0.0,
                   help="also plan with the goal and reconstruction guidance of this weight")
    p.add_argument("--goal-tol", type=float, default=0.03, help="metres (xy) per block")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: model)")
    p.add_argument("--agent-max-steps", type=int, default=0, help="0 = the env's limit")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--video-states", type=int, default=3, help="start states in the videos")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=str(ROOT / "outputs" / "constraints"))
    p.add_argument("--tiny", action="store_true",
                   help="CI: build tiny model and classifier folders, plan from 2 states")
    return p.parse_args(argv)


# ------------------------------------------------------------------------ start states
def start_states(families, split: str, episodes: int, size, offset: int,
                 moved_colour: str | None = None) -> list[dict]:
    """Seeded start states with their scene and the expert's goal state.

    ``moved_colour``: keep only instructions that move the block of that colour.
    """
    import envs
    from envs.tasks import parse_instruction
    from unipi.evaluate import _instructions, cell_seed
    from unipi.goal import expert_goal
    from unipi.plan_score import StartScene

    states = []
    for family in families:
        texts = _instructions(family, split)
        if moved_colour is not None:
            texts = [t for t in texts if parse_instruction(t).block == moved_colour]
        env = envs.make_env(family, image_size=tuple(size))
        for i in range(episodes if texts else 0):
            seed, text = cell_seed(family, split, i, offset), texts[i % len(texts)]
            goal = expert_goal(env, seed, text)
            obs, _ = env.reset(seed=seed, options={"instruction": text})
            states.append(dict(family=family, seed=seed, instruction=text, image=obs["image"],
                               scene=StartScene.from_env(env), goal=goal))
        env.close()
    return states


def plan_all(pipe, states, steps: int, cfg_scale: float, batch: int, **kwargs) -> np.ndarray:
    """uint8 (N, F, H, W, 3) plans of every start state; the generator of each batch is
    seeded by its first state's seed, so variants are compared under the same noise."""
    out = []
    for i in range(0, len(states), batch):
        part = states[i:i + batch]
        extra = dict(kwargs)
        if "goal_image" in extra:
            extra["goal_image"] = np.stack([s["goal"].image for s in part])
        g = torch.Generator().manual_seed(part[0]["seed"])
        out.append(pipe(np.stack([s["image"] for s in part]), [s["instruction"] for s in part],
                        num_inference_steps=steps, guidance_scale=cfg_scale, generator=g,
                        **extra).videos)
    return np.concatenate(out)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.square(a.astype(np.float32) / 255 - b.astype(np.float32) / 255).mean())


def _changed_error(frame, goal, first) -> float:
    f, g, o = (x.astype(np.float32) / 255 for x in (frame, goal, first))
    changed = np.abs(g - o).max(axis=-1) > 0.05
    return float(np.abs(f - g).mean(axis=-1)[changed].mean()) if changed.any() else 0.0


def _reaches(frame, state, tol: float) -> bool:
    """The moved block, read off ``frame`` by colour, within ``tol`` of its goal xy."""
    from envs.tasks import parse_instruction
    from unipi.plan_score import PlanScorer

    colour = parse_instruction(state["instruction"]).block
    xy = PlanScorer().locate(frame, colour, state["scene"], state["image"])
    return xy is not None and float(np.linalg.norm(xy - state["goal"].blocks[colour][:2])) <= tol


# ------------------------------------------------------------------------ (a) goal
def goal_part(pipe, states, args, steps, cfg_scale) -> tuple[dict, dict]:
    from unipi.plan_score import PlanScorer

    variants = {"unconstrained": {}, "goal pinned": {"goal_image": True}}
    if args.goal_guidance > 0:
        variants[f"goal + recon {args.goal_guidance:g}"] = {
            "goal_image": True, "goal_guidance": args.goal_guidance}
    plans, rows = {}, {}
    for name, kw in variants.items():
        start = time.perf_counter()
        plans[name] = plan_all(pipe, states, steps, cfg_scale, args.batch_size, **kw)
        seconds = (time.perf_counter() - start) / len(states)
        per = []
        for s, video in zip(states, plans[name]):
            goal = s["goal"].image
            per.append(dict(
                last_mse=_mse(video[-1], goal), prev_mse=_mse(video[-2], goal),
                prev_changed_error=_changed_error(video[-2], goal, s["image"]),
                reach_last=_reaches(video[-1], s, args.goal_tol),
                reach_prev=_reaches(video[-2], s, args.goal_tol),
                plan_success=PlanScorer().score(video, s["scene"]).success))
        rows[name] = {**_mean(per), "s_per_plan": seconds}
    rows["reader on the goal images"] = {
        "reach_last": float(np.mean([_reaches(s["goal"].image, s, args.goal_tol)
                                     for s in states])),
        "plan_success": float(np.mean([s["goal"].expert_success for s in states]))}
    return rows, plans


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n": len(rows)}


# ---------------------------------------------------------------- (b) classifier
def guide_part(pipe, clf, states, args, steps, cfg_scale) -> tuple[dict, dict]:
    from unipi.classifier.labels import TARGETS, judge_frame
    from unipi.plan_score import PlanScorer

    target, colour = TARGETS[clf.config.target], clf.config.colour
    classes = list(clf.config.classes)
    weights = [0.0] + [float(w) for w in args.weights.split(",") if w.strip()]
    rows, plans = {}, {}
    for w in weights:
        for c in (classes if w else [None]):
            start = time.perf_counter()
            kw = {} if not w else {"guide": clf, "guide_weight": w, "guide_target": c}
            videos = plan_all(pipe, states, steps, cfg_scale, args.batch_size, **kw)
            seconds = (time.perf_counter() - start) / len(states)
            plans[(w, c)] = videos
            read = clf.predict(videos[:, -1]).argmax(-1)
            for cls in (classes if not w else [c]):
                k = classes.index(cls)
                judged = [judge_frame(target, v[-1], s["image"], s["scene"], colour) == k
                          if target.needs_colour else float("nan")
                          for s, v in zip(states, videos)]
                rows[f"w={w:g} -> {cls}"] = dict(
                    weight=w, target=cls, satisfied_by_colour=float(np.mean(judged)),
                    satisfied_by_classifier=float(np.mean(read == k)),
                    plan_success=float(np.mean([PlanScorer().score(v, s["scene"]).success
                                                for s, v in zip(states, videos)])),
                    s_per_plan=seconds, n=len(states))
    return rows, plans


# ------------------------------------------------------------------------ (c) agent
def agent_part(model_dir, states, args, steps) -> dict:
    import envs
    from unipi.agent import UniPiAgent
    from unipi.goal import goal_distance, goal_reached
    from unipi.model_dir import load_idm, load_model_config, load_planner

    cfg = load_model_config(model_dir)
    agent_cfg = cfg.agent
    agent_cfg.num_inference_steps = steps
    if args.agent_max_steps:
        agent_cfg.max_steps = args.agent_max_steps
    agent = UniPiAgent(load_planner(model_dir), load_idm(model_dir), agent_cfg)
    rows = {}
    for name in ("unconstrained", "goal pinned"):
        per, start = [], time.perf_counter()
        for s in states:
            env = envs.make_env(s["family"], image_size=tuple(cfg.env.image_size))
            goal = s["goal"].image if name == "goal pinned" else None
            result = agent.run_episode(env, s["seed"], instruction=s["instruction"],
                                       record=False, goal_image=goal)
            per.append(dict(reached_goal=goal_reached(env, s["goal"], args.goal_tol),
                            goal_distance=goal_distance(env, s["goal"]),
                            success=result.success, steps=result.steps,
                            plans=result.num_plans))
            env.close()
        rows[name] = {**_mean(per), "s_per_episode": (time.perf_counter() - start) / len(states)}
    return rows


# ------------------------------------------------------------------------ output
def table(rows: dict, keys: list[str]) -> str:
    lines = ["| variant | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        cells = [("" if k not in r else f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]))
                 for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_goal_video(out: Path, states, goal_plans: dict, n: int) -> list[str]:
    from unipi.evaluate import write_video
    from unipi.video import side_by_side

    written = []
    n = min(n, len(states))
    if goal_plans and n:
        clips = [side_by_side([states[i]["image"][None], goal_plans["unconstrained"][i],
                               goal_plans["goal pinned"][i], states[i]["goal"].image[None]])
                 for i in range(n)]
        written.append(str(write_video(out / "goal_side_by_side", np.concatenate(clips))))
    return written


def write_guide_video(out: Path, states, plans: dict, n: int) -> list[str]:
    from unipi.evaluate import write_video
    from unipi.video import side_by_side

    n = min(n, len(states))
    if not plans or not n:
        return []
    top = max(w for w, _ in plans)
    guided = [v for (w, _), v in plans.items() if w == top and w > 0]
    clips = [side_by_side([states[i]["image"][None], plans[(0.0, None)][i]]
                          + [v[i] for v in guided]) for i in range(n)]
    return [str(write_video(out / "guide_side_by_side", np.concatenate(clips)))]


# ------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.tiny:
        from unipi.classifier.testing import tiny_folders

        tmp = Path(tempfile.mkdtemp(prefix="constraints-tiny-"))
        _, args.model, args.classifier = tiny_folders(tmp)
        args.episodes, args.families, args.weights = 2, "place", "2"
        args.agent_episodes, args.agent_max_steps = 1, 6
    if args.model is None:
        raise SystemExit("--model MODEL_DIR is required (or --tiny)")
    from unipi.classifier import load_classifier
    from unipi.model_dir import load_model_config, load_planner

    cfg = load_model_config(args.model)
    steps = args.steps or cfg.agent.num_inference_steps
    cfg_scale = cfg.agent.guidance_scale
    size, families = tuple(cfg.env.image_size), args.families.split(",")
    pipe, out = load_planner(args.model), Path(args.out)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "steps": steps}

    # (a) goal images
    t0 = time.perf_counter()
    states = start_states(families, args.split, args.episodes, size, args.seed_offset)
    goal_rows, goal_plans = goal_part(pipe, states, args, steps, cfg_scale)
    report["goal"] = goal_rows
    report["goal_seconds_per_state"] = (time.perf_counter() - t0) / len(states)
    print("\n(a) goal image: distance of the plan to the goal")
    print(table(goal_rows, ["last_mse", "prev_mse", "prev_changed_error", "reach_last",
                            "reach_prev", "plan_success", "s_per_plan", "n"]))

    # (b) classifier guidance
    guide_plans, guide_states = {}, []
    if args.classifier:
        t0 = time.perf_counter()
        clf = load_classifier(args.classifier)
        from unipi.classifier.labels import TARGETS

        colour = clf.config.colour if TARGETS[clf.config.target].needs_colour else None
        guide_states = start_states(families, args.split, args.episodes, size,
                                    args.seed_offset, moved_colour=colour)
        guide_cfg = cfg_scale if args.guide_cfg_scale is None else args.guide_cfg_scale
        guide_rows, guide_plans = guide_part(pipe, clf, guide_states, args, steps, guide_cfg)
        report["guide_cfg_scale"] = guide_cfg
        report["guide"] = guide_rows
        report["guide_seconds_per_state"] = (time.perf_counter() - t0) / max(len(guide_states), 1)
        print(f"\n(b) classifier guidance ({clf.config.target}, {clf.config.colour}; "
              f"classifier-free guidance scale {guide_cfg:g})")
        print(table(guide_rows, ["satisfied_by_colour", "satisfied_by_classifier",
                                 "plan_success", "s_per_plan", "n"]))

    # (c) the agent, goal-conditioned or not
    n_agent = args.episodes if args.agent_episodes is None else args.agent_episodes
    if n_agent:
        t0 = time.perf_counter()
        agent_states = [s for f in families
                        for s in [x for x in states if x["family"] == f][:n_agent]]
        report["agent"] = agent_part(args.model, agent_states, args, steps)
        report["agent_seconds_per_state"] = (time.perf_counter() - t0) / len(agent_states)
        print("\n(c) the agent: episodes that reach the goal configuration")
        print(table(report["agent"], ["reached_goal", "goal_distance", "success", "steps",
                                      "plans", "s_per_episode", "n"]))

    report["videos"] = (write_goal_video(out, states, goal_plans, args.video_states)
                        + write_guide_video(out, guide_states, guide_plans, args.video_states))
    out.mkdir(parents=True, exist_ok=True)
    (out / "constraints.json").write_text(json.dumps(report, indent=2, default=str))
    secs = {k: round(v, 2) for k, v in report.items() if k.endswith("seconds_per_state")}
    print(f"\nseconds per start state: {secs}; wrote {out / 'constraints.json'} and "
          f"{report['videos']}")
    return report


if __name__ == "__main__":
    main()
