"""Noise, loss and the sampling loop shared by the keyframe (base) and TSR stages.

Notation (Ho et al. 2020; Salimans & Ho 2022 for v):
    x0 = clean video in [-1, 1], (B, 3, F, H, W); eps = noise; t = timestep;
    abar_t = ``alphas_cumprod[t]``; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps;
    v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0; SNR(t) = abar_t / (1 - abar_t).

Residual target (``diffusion.residual``). The diffused quantity is then the change from
the first frame, d = x - x_0 (range [-2, 2]); conditioning stays in image space, and
``from_target`` adds x_0 back after sampling.

Known frames. The frames the planner is given are excluded from the loss and, while
sampling, replaced at every step by the given frames noised to the current level:
frame 0 (the observation) in the base stage unless ``conditioning: none``; the
keyframes 0, f, 2f, ... in the TSR stage. The model therefore sees a consistent,
correctly-noised frame 0 in training and sampling, and the output pins them exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from einops import rearrange, repeat

from unipi.planner.config import DiffusionConfig, PlannerConfig
from unipi.planner.unet import SpaceTimeUNet

SAMPLERS = {"ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler}


# ----------------------------------------------------------------------------- frames
def to_model_space(video) -> torch.Tensor:
    """uint8 (B, F, H, W, 3) (numpy or torch) -> float (B, 3, F, H, W) in [-1, 1]."""
    video = torch.as_tensor(np.asarray(video) if not torch.is_tensor(video) else video)
    return rearrange(video.float() / 127.5 - 1.0, "b f h w c -> b c f h w")


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """float (B, 3, F, H, W) in [-1, 1] -> uint8 numpy (B, F, H, W, 3)."""
    video = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(video, "b c f h w -> b f h w c").cpu().numpy()


def upsample_time(coarse: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, K, H, W) -> (B, C, (K - 1) * factor + 1, H, W), linear between keyframes."""
    if factor == 1:
        return coarse
    w = torch.arange(factor, dtype=coarse.dtype, device=coarse.device) / factor
    a, b = coarse[:, :, :-1, None], coarse[:, :, 1:, None]  # (B, C, K-1, 1, H, W)
    mix = a + (b - a) * w[:, None, None]  # (B, C, K-1, factor, H, W)
    mixed = rearrange(mix, "b c k r h w -> b c (k r) h w")
    return torch.cat([mixed, coarse[:, :, -1:]], dim=2)


def to_target(video: torch.Tensor, first: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """Image-space video (B, 3, F, H, W) -> what is diffused (the same, or minus the
    first frame ``first`` (B, 3, H, W) when ``cfg.residual``)."""
    return video - first[:, :, None] if cfg.residual else video


def from_target(x: torch.Tensor, first: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """Inverse of ``to_target``, clamped to the image range [-1, 1]."""
    return (x + first[:, :, None] if cfg.residual else x).clamp(-1, 1)


def target_range(cfg: DiffusionConfig) -> float:
    """Largest magnitude of a diffused value: 1 for images, 2 for differences."""
    return 2.0 if cfg.residual else 1.0


# ------------------------------------------------------------------------ stage layout
def cond_channels(stage: str, cfg: PlannerConfig) -> int:
    """Extra input channels: tiled observation (3) and, for TSR, the coarse video (3)."""
    tiled = 3 if cfg.conditioning == "tile" else 0
    return tiled + (3 if stage == "tsr" else 0)


def known_frames(stage: str, cfg: PlannerConfig, num_frames: int) -> list[int]:
    if stage == "tsr":
        return list(range(0, num_frames, cfg.tsr_factor))
    return [] if cfg.conditioning == "none" else [0]


def make_condition(stage: str, cfg: PlannerConfig, first: torch.Tensor, num_frames: int,
                   coarse: torch.Tensor | None = None) -> torch.Tensor | None:
    """Conditioning frames (B, C_cond, F, H, W) from the observation first (B, 3, H, W)
    and, for TSR, the keyframes coarse (B, 3, K, H, W); None if there is nothing."""
    parts = []
    if stage == "tsr":
        parts.append(upsample_time(coarse, cfg.tsr_factor))
    if cfg.conditioning == "tile":
        parts.append(repeat(first, "b c h w -> b c f h w", f=num_frames))
    return torch.cat(parts, dim=1) if parts else None


def split_clip(video: torch.Tensor, stage: str, cfg: PlannerConfig):
    """A training clip (B, 3, F, H, W) in image space -> (x0, cond, known frame indices),
    x0 being the clip in the diffused space (``to_target``)."""
    num_frames = video.shape[2]
    coarse = video[:, :, :: cfg.tsr_factor] if stage == "tsr" else None
    cond = make_condition(stage, cfg, video[:, :, 0], num_frames, coarse)
    x0 = to_target(video, video[:, :, 0], cfg.diffusion)
    return x0, cond, known_frames(stage, cfg, num_frames)


def make_unet(stage: str, cfg: PlannerConfig, sample_size: int, text_dim: int) -> SpaceTimeUNet:
    net = cfg.tsr if stage == "tsr" else cfg.base
    return SpaceTimeUNet(
        sample_size=sample_size, in_channels=3, cond_channels=cond_channels(stage, cfg),
        out_channels=3, channels=tuple(net.channels), layers_per_block=net.layers_per_block,
        spatial_attention_resolutions=tuple(net.spatial_attention_resolutions),
        temporal_attention_resolutions=tuple(net.temporal_attention_resolutions),
        cross_attention_resolutions=tuple(net.cross_attention_resolutions),
        text_dim=text_dim, head_dim=net.head_dim, norm_groups=net.norm_groups,
        patch_size=net.patch_size, text_film=net.text_film,
    )


# ---------------------------------------------------------------------------- schedulers
def make_noise_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                         beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type)


def make_sampling_scheduler(name: str, cfg: DiffusionConfig):
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                  prediction_type=cfg.prediction_type, timestep_spacing="trailing")
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=True, clip_sample_range=target_range(cfg))
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++")
    raise ValueError(f"planner.sampling.scheduler={name!r}: must be one of {tuple(SAMPLERS)}")


# ---------------------------------------------------------------------------------- loss
def motion_weights(x0: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """(B, 1, F, H, W): 1 + w where a pixel differs from frame 0 by more than a threshold."""
    moved = (x0 - x0[:, :, :1]).abs().amax(dim=1, keepdim=True) > cfg.motion_threshold
    return 1.0 + cfg.motion_weight * moved.to(x0.dtype)


def snr_weights(abar: torch.Tensor, cfg: DiffusionConfig) -> torch.Tensor:
    """min-SNR-gamma (Hang et al. 2023), expressed for the chosen prediction target.

    v and eps: the x0 error gets weight min(SNR, gamma). sample (x0): clamp(SNR, 1,
    gamma), min-SNR with Salimans & Ho's (2022) truncation at 1, so that the
    high-noise steps, where a plan's layout is decided, are not weighted toward 0.
    """
    if cfg.snr_gamma <= 0:
        return torch.ones_like(abar)
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=cfg.snr_gamma)
    if cfg.prediction_type == "sample":
        return clipped.clamp(min=min(1.0, cfg.snr_gamma))
    return clipped / (snr + 1) if cfg.prediction_type == "v_prediction" else clipped / snr


def drop_text(text, mask, p: float, generator):
    """Classifier-free guidance training: with probability p a sample gets no tokens
    (zero features, all-False mask; the U-Net's learned null token remains)."""
    drop = torch.rand(text.shape[0], generator=generator) < p
    drop = drop.to(text.device)
    return text.masked_fill(drop[:, None, None], 0.0), mask & ~drop[:, None]


def diffusion_loss(unet, scheduler: DDPMScheduler, x0, cond, text, mask, known: list[int],
                   cfg: DiffusionConfig, generator: torch.Generator):
    """Weighted denoising loss of a batch x0 (B, 3, F, H, W); returns (loss, stats).

    Noise, timesteps and text dropout are drawn from ``generator`` (on the CPU).
    """
    b, device = x0.shape[0], x0.device

    # 1. draw t, eps and x_t
    t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=generator).to(device)
    eps = torch.randn(x0.shape, generator=generator).to(device)
    x_t = scheduler.add_noise(x0, eps, t)
    target = {"v_prediction": lambda: scheduler.get_velocity(x0, eps, t),
              "epsilon": lambda: eps, "sample": lambda: x0}[cfg.prediction_type]()

    # 2. predict, with the instruction dropped for some samples
    text, mask = drop_text(text, mask, cfg.text_dropout, generator)
    pred = unet(x_t, t, text, mask, cond)

    # 3. weight: per pixel (motion), per frame (known frames out), per sample (min-SNR)
    frame_w = torch.ones(x0.shape[2], device=device)
    frame_w[known] = 0.0
    pixel_w = motion_weights(x0, cfg) * frame_w[:, None, None]
    err = (pred.float() - target.float()).square().mean(dim=1, keepdim=True)
    per_sample = (err * pixel_w).flatten(1).sum(1) / (frame_w.sum() * err[0, 0, 0].numel())
    abar = scheduler.alphas_cumprod.to(device)[t]
    loss = (per_sample * snr_weights(abar, cfg)).mean()
    return loss, {"mse": err.mean().item()}


# ------------------------------------------------------------------------------ sampling
class _Denoiser:
    """One model output at step ``t``: x (B, 3, F, H, W) -> v or eps (B, 3, F, H, W),
    with classifier-free guidance of scale ``guidance_scale`` (None = off; then text,
    mask and cond hold B rows, else 2B: conditional, then unconditional)."""

    def __init__(self, unet, scheduler, t, text, mask, cond, guidance_scale: float | None):
        self.unet, self.scheduler, self.t = unet, scheduler, t
        self.text, self.mask, self.cond, self.scale = text, mask, cond, guidance_scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        guided = self.scale is not None
        inp = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, self.t)
        out = self.unet(inp, self.t, self.text, self.mask, self.cond)
        if guided:
            out_c, out_u = out.chunk(2)
            out = out_u + self.scale * (out_c - out_u)
        return out


@torch.no_grad()
def sample_video(unet, scheduler, shape, cond, text, mask, known: list[int],
                 known_values: torch.Tensor | None, guidance_scale: float, steps: int,
                 generator: torch.Generator | None = None, clip: float = 1.0,
                 constraints=None) -> torch.Tensor:
    """Denoise from pure noise to (B, 3, F, H, W) in [-clip, clip] (the diffused space).

    ``known_values`` (B, 3, len(known), H, W) are imposed on frames ``known`` at every
    step (noised to the step's level) and exactly at the end. With guidance_scale != 1
    the conditional and unconditional passes run as one batch of 2B.

    ``constraints`` (``unipi.planner.constraints.StageConstraints``): frames it pins
    join the known frames; its guidance terms change each step's model output. None
    runs the unconstrained loop.
    """
    device = text.device
    if constraints is not None:
        known, known_values = constraints.with_pins(known, known_values)
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
    guided = guidance_scale != 1.0
    if guided:
        text = torch.cat([text, torch.zeros_like(text)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
        cond = None if cond is None else torch.cat([cond, cond])
    for t in scheduler.timesteps:
        if known:
            noise = torch.randn(known_values.shape, generator=generator).to(device)
            x[:, :, known] = scheduler.add_noise(known_values, noise, t.reshape(1))
        denoise = _Denoiser(unet, scheduler, t, text, mask, cond,
                            guidance_scale if guided else None)
        out = denoise(x) if constraints is None else constraints.guided_output(
            denoise, x, t, scheduler)
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    if known:
        x[:, :, known] = known_values
    return x.clamp(-clip, clip)
