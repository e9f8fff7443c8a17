"""The sampling pipeline: observation + instruction -> a video plan.

    pipe = UniPiPipeline.from_pretrained("runs/place/pipeline")
    out = pipe(obs_uint8_hw3, "put the red block in the blue bowl", generator=g)
    out.videos  # uint8 (B, F, H, W, 3), F = (K - 1) * tsr_factor + 1, frame 0 = obs

A folder holds ``base_unet/`` and ``tsr_unet/`` (diffusers model folders, safetensors),
``scheduler/``, ``planner.json`` (the ``planner`` config section) and
``text_encoder.json``: the frozen text encoder is stored as its source (type, path),
not as weights, and is loaded from that source again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from omegaconf import OmegaConf

from unipi.planner.config import PlannerConfig
from unipi.planner.constraints import Constraint, StageConstraints, make_constraints
from unipi.planner.diffusion import (
    SAMPLERS, from_target, known_frames, make_condition, sample_video, target_range,
    to_model_space, to_target, to_uint8,
)
from unipi.planner.text import TextEncoder
from unipi.planner.unet import SpaceTimeUNet


@dataclass
class UniPiPipelineOutput(BaseOutput):
    """videos: uint8 (B, F, H, W, 3); keyframes: uint8 (B, K, H, W, 3) or None."""

    videos: np.ndarray
    keyframes: np.ndarray | None = None


def planner_from_dict(data: dict) -> PlannerConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PlannerConfig), data))


def _images(image) -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    image = np.asarray(image) if not torch.is_tensor(image) else image.cpu().numpy()
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"image: expected uint8 (H, W, 3) or (B, H, W, 3), "
                         f"got {image.dtype} {image.shape}")
    image = image[None] if image.ndim == 3 else image
    return to_model_space(image[:, None])[:, :, 0]


def sample_keyframes(unet: SpaceTimeUNet, scheduler, planner: PlannerConfig, first, text, mask,
                     steps: int, guidance: float, generator,
                     constraints: list[Constraint] | None = None) -> torch.Tensor:
    """The base stage alone: first (B, 3, H, W) in [-1, 1], text (B, L, D), mask (B, L)
    -> keyframes (B, 3, K, H, W) in [-1, 1] (all F frames when there is no hierarchy).

    ``constraints`` (``unipi.planner.constraints``, image space) act on these frames:
    a goal pins the last one."""
    p, d = planner, planner.diffusion
    f = p.num_keyframes if p.hierarchy else p.num_frames
    b, _, h, w = first.shape
    known = known_frames("base", p, f)
    bound = StageConstraints(constraints, first, f, d) if constraints else None
    x = sample_video(
        unet, scheduler, (b, 3, f, h, w), make_condition("base", p, first, f), text, mask,
        known, to_target(first[:, :, None], first, d) if known else None, guidance, steps,
        generator, clip=target_range(d), constraints=bound)
    return from_target(x, first, d)


class UniPiPipeline(DiffusionPipeline):
    """Keyframes from the base U-Net, then temporal super-resolution (if ``tsr_unet``)."""

    def __init__(self, text_encoder: TextEncoder, base_unet: SpaceTimeUNet,
                 tsr_unet: SpaceTimeUNet | None, scheduler, planner: PlannerConfig):
        super().__init__()
        if planner.hierarchy and tsr_unet is None:
            raise ValueError("planner.hierarchy=true needs a tsr_unet (train stage 'tsr', "
                             "or set planner.hierarchy=false)")
        self.register_modules(text_encoder=text_encoder, base_unet=base_unet,
                              tsr_unet=tsr_unet, scheduler=scheduler)
        self.planner = planner

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | os.PathLike, **_) -> None:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.base_unet.save_pretrained(out / "base_unet", safe_serialization=True)
        if self.tsr_unet is not None:
            self.tsr_unet.save_pretrained(out / "tsr_unet", safe_serialization=True)
        self.scheduler.save_pretrained(out / "scheduler")
        (out / "text_encoder.json").write_text(json.dumps(self.text_encoder.to_config(), indent=2))
        (out / "planner.json").write_text(json.dumps(dataclasses.asdict(self.planner), indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, text_encoder: TextEncoder | None = None,
                        **_) -> "UniPiPipeline":
        """Load a folder written by ``save_pretrained``; pass ``text_encoder`` to reuse one."""
        folder = Path(folder)
        if not (folder / "planner.json").is_file():
            raise FileNotFoundError(f"{folder}: not a UniPi pipeline folder (no planner.json)")
        planner = planner_from_dict(json.loads((folder / "planner.json").read_text()))
        if text_encoder is None:
            spec = json.loads((folder / "text_encoder.json").read_text())
            text_encoder = TextEncoder(spec["type"], spec["name_or_path"], spec["max_length"])
        name = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        scheduler_cls = {c.__name__: c for c in SAMPLERS.values()}[name["_class_name"]]
        tsr = folder / "tsr_unet"
        return cls(
            text_encoder=text_encoder,
            base_unet=SpaceTimeUNet.from_pretrained(folder / "base_unet").eval(),
            tsr_unet=SpaceTimeUNet.from_pretrained(tsr).eval() if tsr.is_dir() else None,
            scheduler=scheduler_cls.from_pretrained(folder / "scheduler"),
            planner=planner,
        )

    # ---------------------------------------------------------------------- stages
    def _encode(self, instruction, batch: int):
        texts = [instruction] if isinstance(instruction, str) else list(instruction)
        if len(texts) not in (1, batch):
            raise ValueError(f"instruction: {len(texts)} strings for {batch} images")
        features, mask = self.text_encoder.encode(texts * (batch // len(texts)))
        return features.to(self.base_unet.device), mask.to(self.base_unet.device)

    def generate_keyframes(self, first, text, mask, steps, guidance, generator,
                           constraints: list[Constraint] | None = None):
        """first (B, 3, H, W) -> keyframes (B, 3, K, H, W) (all frames if no hierarchy)."""
        return sample_keyframes(self.base_unet, self.scheduler, self.planner, first, text, mask,
                                steps, guidance, generator, constraints)

    def super_resolve(self, keyframes, text, mask, steps, guidance, generator):
        """keyframes (B, 3, K, H, W) -> video (B, 3, (K - 1) * f + 1, H, W)."""
        p, d = self.planner, self.planner.diffusion
        b, _, k, h, w = keyframes.shape
        f = (k - 1) * p.tsr_factor + 1
        first = keyframes[:, :, 0]
        cond = make_condition("tsr", p, first, f, keyframes)
        x = sample_video(self.tsr_unet, self.scheduler, (b, 3, f, h, w), cond, text, mask,
                         known_frames("tsr", p, f), to_target(keyframes, first, d), guidance,
                         steps, generator, clip=target_range(d))
        return from_target(x, first, d)

    @torch.no_grad()
    def __call__(self, image, instruction: str | list[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 return_keyframes: bool = False, goal_image=None, goal_guidance: float = 0.0,
                 guide=None, guide_weight: float = 0.0,
                 guide_target: int | str | None = None) -> UniPiPipelineOutput:
        """image uint8 (H, W, 3) or (B, H, W, 3); instruction: one string or B strings.

        Returns videos uint8 (B, F, H, W, 3) with frame 0 equal to ``image``.

        Behaviour modulation (``unipi.planner.constraints``), none by default:
        ``goal_image`` uint8 (H, W, 3) or (B, H, W, 3) pins the last frame (with
        reconstruction guidance of weight ``goal_guidance`` if > 0); ``guide``, a
        differentiable frame classifier, steers the last frame toward class
        ``guide_target`` (index or name) with weight ``guide_weight``.
        """
        steps = num_inference_steps or self.planner.sampling.num_inference_steps
        guidance = self.planner.sampling.guidance_scale if guidance_scale is None else guidance_scale

        # 1. the observation and the instruction
        first = _images(image).to(self.base_unet.device)
        text, mask = self._encode(instruction, first.shape[0])
        constraints = make_constraints(
            first.shape[0], tuple(first.shape[-2:]), first.device, goal_image, goal_guidance,
            guide, guide_weight, guide_target)

        # 2. keyframes (constrained), then the frames between them (the last is known)
        keyframes = self.generate_keyframes(first, text, mask, steps, guidance, generator,
                                            constraints)
        keyframes[:, :, 0] = first
        video = keyframes
        if self.planner.hierarchy:
            video = self.super_resolve(keyframes, text, mask, steps, guidance, generator)

        # 3. frame 0 is the observation, exactly
        out = to_uint8(video)
        out[:, 0] = (np.asarray(image) if not torch.is_tensor(image) else image.cpu().numpy()
                     ).reshape(out[:, 0].shape)
        keys = to_uint8(keyframes) if return_keyframes else None
        return UniPiPipelineOutput(videos=out, keyframes=keys)
