"""The ``unipi`` command line.

    unipi demo                                        # the agent on the shipped weights
    unipi collect --env place --episodes 200 --workers 2 --out data/place
    unipi train planner --config configs/place.yaml --stage base
    unipi train idm --config configs/place.yaml
    unipi plan "place the red block in the blue bowl" --env place --seed 3 --out plan.mp4
    unipi eval --env place --split novel --episodes 50 --model DIR

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
    p.add_argument("--env", default="place", help="place | relation | all")
    p.add_argument("--episodes", type=int, required=True, help="successful episodes to keep")
    p.add_argument("--out", required=True, help="dataset folder (created; resumed if present)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--image-size", type=_size, default=(32, 32), help="HxW, default 32x32")
    p.add_argument("--labelled-fraction", type=float, default=0.1,
                   help="fraction of episodes that keep action labels (default 0.1)")
    p.add_argument("--episode-steps", type=int, default=64)
    p.add_argument("--split", default="seen", help="instruction split to draw tasks from")
    p.add_argument("--seed-offset", type=int, default=0)
    p.set_defaults(func=_run_collect)


def _run_collect(args) -> None:
    from unipi.data.collect import collect

    counts = collect(
        args.out, args.episodes, families=_families(args.env), image_size=args.image_size,
        workers=args.workers, labelled_fraction=args.labelled_fraction,
        episode_steps=args.episode_steps, split=args.split, seed_offset=args.seed_offset,
    )
    print(f"kept {counts['kept']} episodes in {args.out}; discarded {counts['discarded']} "
          f"unsuccessful ({counts['discarded_this_run']} in this run)")


# ----------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the planner or the inverse-dynamics model")
    p.add_argument("what", choices=("planner", "idm"))
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/place.yaml")
    p.add_argument("--stage", choices=("base", "tsr"), default="base",
                   help="planner stage (base keyframes or temporal super-resolution)")
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.set_defaults(func=_run_train)


def _run_train(args) -> None:
    from unipi.config import load_config

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / cfg.name)
    if args.what == "planner":
        from unipi.planner.train import train_planner

        train_planner(cfg, stage=args.stage, out_dir=out, resume=args.resume,
                      max_steps=args.max_steps)
    else:
        from inverse_dynamics.train import train_idm

        metrics = train_idm(cfg, out_dir=out, resume=args.resume, max_steps=args.max_steps)
        print(f"inverse dynamics held-out metrics: {metrics}")


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
    p.set_defaults(func=_run_plan)


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
    pipe = load_planner(args.model)
    out = pipe(
        image[None], [args.instruction],
        num_inference_steps=args.steps or cfg.agent.num_inference_steps,
        guidance_scale=cfg.agent.guidance_scale if args.guidance is None else args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
    )
    video = side_by_side([image[None], out.videos[0]])
    mp4 = Path(args.out).with_suffix(".mp4")
    write_video(mp4, video)
    gif = write_video(mp4.with_suffix(".gif"), video)
    print(f"plan of {len(out.videos[0])} frames (observed frame | plan) written to {mp4} "
          f"and {gif}")


# ----------------------------------------------------------------------------- eval
def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="success rate per family and split, with videos")
    p.add_argument("--env", default="all", help="place | relation | all (default)")
    p.add_argument("--split", default="both", help="seen | novel | both (default)")
    p.add_argument("--episodes", type=int, default=50, help="episodes per family x split")
    p.add_argument("--model", default=None, help="model folder (default: shipped weights)")
    p.add_argument("--expert", action="store_true", help="evaluate the scripted expert")
    p.add_argument("--out", default="outputs/eval", help="folder for eval_info.json, videos")
    p.add_argument("--video-episodes", type=int, default=2, help="videos per cell")
    p.add_argument("--workers", type=int, default=1, help="processes, one cell each")
    p.add_argument("--seed-offset", type=int, default=0)
    p.add_argument("--open-loop", action="store_true", help="plan once, execute it all")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    p.set_defaults(func=_run_eval)


def _splits(split: str) -> list[str]:
    if split == "both":
        return ["seen", "novel"]
    if split not in ("seen", "novel"):
        raise UsageError(f"--split {split!r}: accepted values are seen, novel, both")
    return [split]


def _run_eval(args) -> None:
    from unipi.eval_runner import EvalRequest, run_evaluation

    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes}: must be a positive integer")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be >= 1")
    request = EvalRequest(
        families=_families(args.env), splits=_splits(args.split), episodes=args.episodes,
        model=args.model, expert=args.expert, out_dir=args.out,
        video_episodes=args.video_episodes, seed_offset=args.seed_offset,
        open_loop=args.open_loop, steps=args.steps, guidance=args.guidance,
    )
    info = run_evaluation(request, workers=args.workers)
    print(info["table"])
    print(f"eval_info.json and {len(info['videos'])} videos written to {args.out}")


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
    _add_demo(sub)
    _add_export(sub)
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

    try:
        args.func(args)
    except (UsageError, ConfigError, DatasetFormatError, FileNotFoundError, ValueError) as err:
        print(f"unipi {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
