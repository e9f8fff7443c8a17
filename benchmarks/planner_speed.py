"""Planner speed on this machine: training step of our U-Net vs diffusers' UNet3D, one plan.

    python benchmarks/planner_speed.py               # configs/tabletop.yaml, 1 thread
    python benchmarks/planner_speed.py --threads 2 --batch 16 --config configs/tabletop.yaml

Each measurement runs in a fresh process so that its peak memory (max RSS) is its own.
Goals (see unipi/planner): a train step >= 3x faster than ``UNet3DConditionModel`` of
about the same size at 8x32x32, batch 8; a full plan (keyframes + TSR, guided) < 2 s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tabletop.yaml")

FRAMES, SIZE, TEXT_LEN, TEXT_DIM = 8, 32, 12, 384


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU counts every thread of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _median(times: list[tuple[float, float]]) -> tuple[float, float]:
    return tuple(sorted(t[i] for t in times)[len(times) // 2] for i in (0, 1))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _ours(cond_channels: int, config: str):
    from unipi.config import load_config
    from unipi.planner.diffusion import make_unet

    return make_unet("base", load_config(config).planner, SIZE, TEXT_DIM)


def _unet3d(cond_channels: int, config: str):
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=SIZE, in_channels=3 + cond_channels, out_channels=3,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32, 48), layers_per_block=1, norm_num_groups=8,
        cross_attention_dim=TEXT_DIM, attention_head_dim=8,
    )


def _train_step_worker(name: str, batch: int, threads: int, steps: int, config: str,
                       queue) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = {"ours": _ours, "unet3d": _unet3d}[name](3, config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, FRAMES, SIZE, SIZE)
    cond = torch.randn(batch, 3, FRAMES, SIZE, SIZE)
    t = torch.randint(0, 1000, (batch,))
    text = torch.randn(batch, TEXT_LEN, TEXT_DIM)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.bool)

    def step() -> None:
        if name == "ours":
            out = model(x, t, text, mask, cond)
        else:
            out = model(torch.cat([x, cond], 1), t, encoder_hidden_states=text).sample
        out.square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    times = []
    for _ in range(steps):
        times.append(_timed(step))
    params = sum(p.numel() for p in model.parameters())
    queue.put((name, params, _median(times), _peak_rss_mb()))


def _plan_worker(threads: int, steps: int, config: str, queue) -> None:
    import numpy as np
    import torch

    from unipi.config import load_config
    from unipi.planner.diffusion import make_sampling_scheduler, make_unet
    from unipi.planner.pipeline import UniPiPipeline
    from unipi.planner.text import TextEncoder

    torch.set_num_threads(threads)
    cfg = load_config(config)
    p, (h, w) = cfg.planner, cfg.env.image_size
    enc = TextEncoder.from_config(cfg.text_encoder)
    pipe = UniPiPipeline(enc, make_unet("base", p, h, enc.dim).eval(),
                         make_unet("tsr", p, h, enc.dim).eval(),
                         make_sampling_scheduler(p.sampling.scheduler, p.diffusion), p)
    image = np.full((h, w, 3), 128, np.uint8)
    instruction = "put the red block in the blue bowl"
    pipe(image, instruction, num_inference_steps=2)  # warm-up, caches the instruction
    times, out = [], []
    for seed in range(3):
        times.append(_timed(lambda: out.append(pipe(
            image, instruction, num_inference_steps=steps, guidance_scale=2.0,
            generator=torch.Generator().manual_seed(seed)))))
    queue.put(("plan", out[-1].videos.shape, _median(times), _peak_rss_mb()))


def _run(target, *args):
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--plan-steps", type=int, default=20, help="sampling steps per stage")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config of our U-Nets")
    args = parser.parse_args()

    rows = {}
    for name in ("ours", "unet3d"):
        rows[name] = _run(_train_step_worker, name, args.batch, args.threads, args.steps,
                          args.config)
        _, params, (wall, cpu), rss = rows[name]
        print(f"train step {name:>6}: {params=:,} batch={args.batch} {FRAMES}x{SIZE}x{SIZE} "
              f"threads={args.threads}: {cpu:.3f} CPU s/step ({wall:.3f} wall s), "
              f"peak RSS {rss:,.0f} MB", flush=True)
    for i, clock in enumerate(("wall", "CPU")):
        ratio = rows["unet3d"][2][i] / rows["ours"][2][i]
        print(f"speed-up over UNet3DConditionModel ({clock} time): {ratio:.2f}x (goal >= 3x)")

    _, shape, (wall, cpu), rss = _run(_plan_worker, args.threads, args.plan_steps,
                                      args.config)
    print(f"full plan (keyframes + TSR, {args.plan_steps} steps each, guidance 2.0, "
          f"threads={args.threads}): {cpu:.2f} CPU s ({wall:.2f} wall s) for videos {shape}, "
          f"peak RSS {rss:,.0f} MB (goal < 2 s)")

if __name__ == "__main__":
    main()
