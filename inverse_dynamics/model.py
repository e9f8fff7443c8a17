"""Inverse-dynamics model: the env actions that lead from one frame to a later one.

UniPi turns a generated video into actions with a small, separately trained network
(paper, Sec. 3.4 and App. A): convolutions, three residual conv blocks, mean pooling
over space and an MLP. Here it reads two planner frames ``chunk`` env steps apart and
returns the ``chunk`` actions between them.

Notation (paper -> code)::

    x_t, x_{t+1}    frame_a, frame_b      two consecutive planned frames
    a_t             actions               (chunk, action_dim) env actions, t .. t+chunk-1

Actions are normalised per dimension with the training set's mean and std; those
statistics are buffers, so they travel in ``diffusion_pytorch_model.safetensors`` and
``predict`` answers in env units after ``from_pretrained``.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn
from torch.nn import functional as F


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip, then a stride-2 conv that halves H and W."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.down = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.down(h + self.skip(x))


class InverseDynamicsModel(ModelMixin, ConfigMixin):
    """Predicts the ``chunk`` actions between two frames.

    Args:
        chunk: env steps between the two frames (= actions predicted per pair).
        action_dim: size of one action, 4 for (dx, dy, dz, gripper).
        channels: width of the stem; the three residual blocks use 1x, 2x, 2x.
        hidden: width of the MLP head.
        use_difference: also feed ``frame_b - frame_a`` (3 more input channels).
    """

    @register_to_config
    def __init__(
        self,
        chunk: int = 4,
        action_dim: int = 4,
        channels: int = 32,
        hidden: int = 256,
        use_difference: bool = True,
    ) -> None:
        super().__init__()
        c_in = 9 if use_difference else 6
        widths = [channels, channels * 2, channels * 2]
        self.stem = nn.Conv2d(c_in, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResidualBlock(a, b) for a, b in zip([channels] + widths[:-1], widths)
        )
        self.norm_out = nn.GroupNorm(_groups(widths[-1]), widths[-1])
        self.head = nn.Sequential(
            nn.Linear(widths[-1], hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, chunk * action_dim),
        )
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))

    # -- normalisation ---------------------------------------------------------------

    def set_action_stats(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-3):
        """Store per-dimension action statistics; std is floored at ``min_std``."""
        dim = self.config.action_dim
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(dim)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(dim).clamp_min(min_std)
        self.action_mean.copy_(mean)
        self.action_std.copy_(std)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Env units -> model units; ``actions: (..., action_dim)``."""
        return (actions - self.action_mean) / self.action_std

    def unnormalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Model units -> env units; ``actions: (..., action_dim)``."""
        return actions * self.action_std + self.action_mean

    # -- network ---------------------------------------------------------------------

    @staticmethod
    def to_model_input(frames: torch.Tensor) -> torch.Tensor:
        """``frames: (B, 2, H, W, 3)`` uint8 in [0, 255] or float in [-1, 1] -> float."""
        if frames.ndim != 5 or frames.shape[1] != 2 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (B, 2, H, W, 3), got {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            return frames.float() / 127.5 - 1.0
        return frames.float()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised actions between the two frames of each pair.

        Args:
            frames: (B, 2, H, W, 3), frame t then frame t + chunk; uint8 in [0, 255]
                or float already scaled to [-1, 1].

        Returns:
            (B, chunk, action_dim) actions in normalised units (see ``unnormalize``).
        """
        x = self.to_model_input(frames).to(self.stem.weight.device)
        a, b = x[:, 0], x[:, 1]
        parts = [a, b, b - a] if self.config.use_difference else [a, b]
        x = rearrange(torch.cat(parts, dim=-1), "b h w c -> b c h w")

        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))  # (B, C) mean pooling
        out = self.head(h)
        return rearrange(out, "b (k d) -> b k d", k=self.config.chunk)

    @torch.no_grad()
    def predict(self, frame_a, frame_b) -> np.ndarray:
        """Env-unit actions between ``frame_a`` and ``frame_b``, clipped to [-1, 1].

        Args:
            frame_a, frame_b: (B, H, W, 3) or (H, W, 3), uint8 numpy arrays or tensors
                (float input must already be in [-1, 1]).

        Returns:
            np.float32 (B, chunk, action_dim); (chunk, action_dim) for unbatched input.
        """
        a, b = torch.as_tensor(np.asarray(frame_a)), torch.as_tensor(np.asarray(frame_b))
        single = a.ndim == 3
        if single:
            a, b = a[None], b[None]
        if a.shape != b.shape:
            raise ValueError(f"frame shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        was_training = self.training
        self.eval()
        try:
            actions = self.unnormalize(self(torch.stack([a, b], dim=1)))
        finally:
            self.train(was_training)
        out = actions.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
        return out[0] if single else out
