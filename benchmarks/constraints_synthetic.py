"""Behaviour modulation on a model that has learned something: moving squares, on a CPU.

    python benchmarks/constraints_synthetic.py --out outputs/constraints_synthetic

The tabletop planner takes hours to train here; this check takes minutes. It trains a
small keyframe model on ``unipi.planner.synthetic.MovingSquares`` (16x16, 4 frames, a
square moving 3 px per frame as its instruction says), and a ``FrameClassifier`` on
the same frames for "is the square in the left or right half" (labels exact: the
square's centroid), then plans from 64 held-out starts and measures:

(a) goal image = the clip's true last frame. Unconstrained vs pinned plans, same seed:
    pixel MSE to the goal of the last frame and of the frame before it, and the error
    (pixels) of the square's centroid in the frame before the last against the truth.
(b) classifier guidance. Starts whose instruction is "up" or "down", so that the
    instruction leaves the side of the frame unchanged (MovingSquares starts these
    squares in the left third, so "right" asks for a sideways move the data never
    shows): the fraction of plans whose last frame has the square in the guided half
    (read by centroid, not by the classifier), for each weight; the classifier's own
    reading (a high reading with a low centroid score = adversarial frames); and the
    fraction still moving as told.

Trained models are kept under ``--out`` and reused by a second run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE, FRAMES, SPEED = 16, 4, 3


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "outputs" / "constraints_synthetic"))
    p.add_argument("--planner-steps", type=int, default=700)
    p.add_argument("--classifier-steps", type=int, default=300)
    p.add_argument("--starts", type=int, default=64, help="held-out start states")
    p.add_argument("--weights", default="0.03,0.1,0.3,1,3")
    p.add_argument("--steps", type=int, default=10, help="denoising steps")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def train_squares_planner(out: Path, steps: int):
    from unipi.config import load_config
    from unipi.planner.pipeline import UniPiPipeline
    from unipi.planner.synthetic import MovingSquares
    from unipi.planner.testing import tiny_overrides
    from unipi.planner.train import train_planner

    if not (out / "pipeline" / "planner.json").is_file():
        cfg = load_config(None, tiny_overrides(SIZE) + [
            "planner.hierarchy=false", "planner.tsr_factor=1", "planner.base.channels=[16,32]",
            "planner.base.head_dim=8", "planner.train.batch_size=16", "planner.train.lr=1e-3",
            "planner.train.warmup_steps=20", "planner.train.ema_decay=0.99",
            f"planner.train.checkpoint_every={steps}", "planner.train.log_every=100"])
        train_planner(cfg, "base", out, max_steps=steps,
                      dataset=MovingSquares(num_frames=FRAMES, speed=SPEED))
    return UniPiPipeline.from_pretrained(out / "pipeline")


def side_label(frame: np.ndarray) -> int:
    """0 = the square's centroid is in the left half, 1 = right, -1 = no square."""
    from unipi.planner.synthetic import square_centroid

    c = square_centroid(frame)
    return -1 if c is None else int(c[1] + 0.5 >= SIZE / 2)


def squares_frames(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from unipi.planner.synthetic import MovingSquares

    data = MovingSquares(size=n, num_frames=FRAMES, speed=SPEED, seed=seed)
    frames = np.concatenate([data[i]["video"].numpy() for i in range(n)])
    labels = np.array([side_label(f) for f in frames])
    return frames[labels >= 0], labels[labels >= 0]


def train_squares_classifier(out: Path, steps: int):
    from torch.nn import functional as F

    from unipi.classifier.model import FrameClassifier

    if (out / "classifier" / "config.json").is_file():
        clf = FrameClassifier.from_pretrained(out / "classifier").eval()
    else:
        frames, labels = squares_frames(2000, seed=1)
        clf = FrameClassifier(image_size=(SIZE, SIZE), classes=("left", "right"),
                              default_class="left", target="square_side", colour="",
                              channels=16, hidden=64)
        opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
        g = torch.Generator().manual_seed(0)
        x_all = FrameClassifier.to_model_input(frames)
        y_all = torch.from_numpy(labels)
        for _ in range(steps):
            idx = torch.randint(len(x_all), (64,), generator=g)
            x = x_all[idx] + torch.rand(64, 1, 1, 1, generator=g) * 0.15 * torch.randn(
                64, 3, SIZE, SIZE, generator=g)
            loss = F.cross_entropy(clf(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        clf.save_pretrained(out / "classifier")
        clf.eval()
    frames, labels = squares_frames(200, seed=2)
    acc = float((clf.predict(frames).argmax(-1) == labels).mean())
    return clf, {"held_out_accuracy": acc, "majority": float(max(labels.mean(),
                                                                  1 - labels.mean()))}


def main(argv=None) -> dict:
    from unipi.planner.synthetic import MovingSquares, moved_as_told, square_centroid
    from unipi.video import side_by_side, write_video

    args = _args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    pipe = train_squares_planner(out / "planner_run", args.planner_steps)
    clf, clf_report = train_squares_classifier(out, args.classifier_steps)
    report = {"classifier": clf_report, "train_seconds": time.perf_counter() - t0}

    held = MovingSquares(size=args.starts, num_frames=FRAMES, speed=SPEED, seed=99)
    items = [held[i] for i in range(args.starts)]
    truth = np.stack([it["video"].numpy() for it in items])  # (N, F, H, W, 3)
    texts = [it["instruction"] for it in items]

    def run(first, instr, **kw):
        g = torch.Generator().manual_seed(0)
        return pipe(first, instr, num_inference_steps=args.steps, guidance_scale=2.0,
                    generator=g, **kw).videos

    def mse(a, b):
        return float(np.square(a.astype(np.float32) / 255 - b.astype(np.float32) / 255).mean())

    def centroid_err(video, true):
        a, b = square_centroid(video), square_centroid(true)
        return float("nan") if a is None or b is None else float(np.linalg.norm(a - b))

    # (a) goal = the true last frame
    t0 = time.perf_counter()
    plans = {"unconstrained": run(truth[:, 0], texts),
             "goal pinned": run(truth[:, 0], texts, goal_image=truth[:, -1])}
    plans["goal + recon 1"] = run(truth[:, 0], texts, goal_image=truth[:, -1], goal_guidance=1.0)
    report["goal"] = {name: {
        "last_mse": float(np.mean([mse(v[-1], t[-1]) for v, t in zip(p, truth)])),
        "prev_mse_to_goal": float(np.mean([mse(v[-2], t[-1]) for v, t in zip(p, truth)])),
        "prev_centroid_error_px": float(np.nanmean([centroid_err(v[-2], t[-2])
                                                    for v, t in zip(p, truth)])),
        "moved_as_told": float(np.mean([moved_as_told(v, s.split()[-1])
                                        for v, s in zip(p, texts)])),
        "prev_moved_as_told": float(np.mean([moved_as_told(v[:-1], s.split()[-1])
                                             for v, s in zip(p, texts)])),
    } for name, p in plans.items()}
    report["goal_seconds"] = time.perf_counter() - t0

    # (b) classifier guidance on up/down starts
    t0 = time.perf_counter()
    vertical = [i for i, s in enumerate(texts) if s.split()[-1] in ("up", "down")]
    first, instr = truth[vertical, 0], [texts[i] for i in vertical]
    guided = {(0.0, None): run(first, instr)}
    for w in [float(x) for x in args.weights.split(",")]:
        for c in ("left", "right"):
            guided[(w, c)] = run(first, instr, guide=clf, guide_weight=w, guide_target=c)
    rows = {}
    for (w, c), videos in guided.items():
        sides = np.array([side_label(v[-1]) for v in videos])
        told = float(np.mean([moved_as_told(v, s.split()[-1]) for v, s in zip(videos, instr)]))
        for cls in ([c] if c else ["left", "right"]):
            k = ["left", "right"].index(cls)
            read = clf.predict(videos[:, -1]).argmax(-1)
            rows[f"w={w:g} -> {cls}"] = {"in_target_half": float(np.mean(sides == k)),
                                         "classifier_reads_target": float(np.mean(read == k)),
                                         "moved_as_told": told, "n": len(videos)}
    report["guide"] = rows
    report["guide_seconds"] = time.perf_counter() - t0

    # side-by-side videos
    n, top = 6, max(w for w, _ in guided)
    goal_clip = np.concatenate([side_by_side([truth[i, :1], plans["unconstrained"][i],
                                              plans["goal pinned"][i], truth[i, -1:]])
                                for i in range(n)])
    guide_clip = np.concatenate([side_by_side([first[i:i + 1], guided[(0.0, None)][i]]
                                              + [guided[(top, c)][i]
                                                 for c in ("left", "right")])
                                 for i in range(n)])
    report["videos"] = [str(write_video(out / "goal_side_by_side.gif", goal_clip)),
                        str(write_video(out / "guide_side_by_side.gif", guide_clip))]
    (out / "constraints_synthetic.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
