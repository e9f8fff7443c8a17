"""A small CNN that classifies one planner-resolution frame, for classifier guidance.

    clf = FrameClassifier.from_pretrained("runs/tabletop_classifier/classifier")
    clf.predict(frames_uint8_nhw3)        # (N, C) probabilities
    clf.config.classes                    # e.g. ["left", "right"]

The network is smooth (SiLU, GroupNorm, no max-pooling) so that the gradient of its
log-probabilities with respect to the input frame, which steers sampling, is dense.
It keeps a coarse 4 x 4 grid of features before the head: questions like "which side
of the table" are about where things are, which global pooling would throw away.
Weights are ``diffusion_pytorch_model.safetensors`` beside ``config.json``.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn
from torch.nn import functional as F

GRID = 4  # features are pooled to GRID x GRID cells before the head


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _Stage(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, then a stride-2 3x3 conv (halves H and W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c_in), c_in)
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.down = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.conv(F.silu(self.norm(x)))))


class FrameClassifier(ModelMixin, ConfigMixin):
    """Logits of ``len(classes)`` classes for frames of ``image_size`` (H, W).

    Args:
        image_size: (H, W) of the frames it reads (the planner's resolution).
        classes: class names, e.g. ("left", "right").
        default_class: the class guidance steers toward when none is named.
        target, colour: what the classes answer (``unipi.classifier.labels.TARGETS``).
        channels, hidden: stem width and MLP width.
    """

    @register_to_config
    def __init__(self, image_size: tuple[int, int] = (32, 32),
                 classes: tuple[str, ...] = ("left", "right"), default_class: str = "left",
                 target: str = "block_side", colour: str = "red", channels: int = 16,
                 hidden: int = 64) -> None:
        super().__init__()
        widths = [channels, 2 * channels, 2 * channels]
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.stages = nn.ModuleList(_Stage(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.norm_out = nn.GroupNorm(_groups(widths[-1]), widths[-1])
        self.head = nn.Sequential(
            nn.Linear(widths[-1] * GRID * GRID, hidden), nn.SiLU(),
            nn.Linear(hidden, len(classes)),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, 3, H, W) float in [-1, 1] -> logits (N, C)."""
        h, w = self.config.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (3, h, w):
            raise ValueError(f"FrameClassifier: expected frames (N, 3, {h}, {w}) in [-1, 1], "
                             f"got {tuple(frames.shape)}")
        x = self.stem(frames.to(self.stem.weight))
        for stage in self.stages:
            x = stage(x)
        x = F.adaptive_avg_pool2d(F.silu(self.norm_out(x)), GRID)  # (N, C, 4, 4)
        return self.head(rearrange(x, "n c h w -> n (c h w)"))

    @staticmethod
    def to_model_input(frames) -> torch.Tensor:
        """uint8 (N, H, W, 3) (numpy or torch) -> float (N, 3, H, W) in [-1, 1]."""
        frames = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} "
                             f"{tuple(frames.shape)}")
        return rearrange(frames.float() / 127.5 - 1.0, "n h w c -> n c h w")

    @torch.no_grad()
    def predict(self, frames) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 probabilities (N, C)."""
        was_training = self.training
        self.eval()
        try:
            probs = self(self.to_model_input(frames)).softmax(-1)
        finally:
            self.train(was_training)
        return probs.float().cpu().numpy()
