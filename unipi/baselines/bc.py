"""Language-conditioned Transformer behaviour cloning: camera frame + instruction -> actions.

The paper's baselines (Sec. 4.1, Table 1) are BC policies that map the observation and
the instruction straight to actions, with no imagined video in between. This one sees
what UniPi sees (the planner-resolution camera frame and the frozen text encoder's
token features) and, optionally, proprioception; it predicts the next ``chunk`` env
actions at once (action chunking), of which the agent executes the first few.

One forward pass::

    1. image tokens    stride-2 conv stem, a residual block (halves H, W again), 1x1
                       conv to d_model: (H/4 * W/4) tokens, learned position embedding
    2. text tokens     the encoder's token features projected to d_model (padding masked)
    3. state token     normalised (ee xyz, holding) projected to d_model (use_state only)
    4. queries         ``chunk`` learned action queries, one per future step
    5. transformer     torch.nn.TransformerEncoder (pre-norm) over
                       [queries, image, text, state]; each query's output -> one action

Actions (and the state) are normalised per dimension with the training set's mean and
std; the statistics are buffers, saved with the weights, so ``predict`` answers in env
units after ``from_pretrained``.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange, repeat
from torch import nn
from torch.nn import functional as F

from inverse_dynamics.model import ResidualBlock, _groups


class BCPolicy(ModelMixin, ConfigMixin):
    """Predicts the next ``chunk`` actions from frames, instruction features and state.

    Args:
        image_size: (H, W) of the camera frames; each must be divisible by 4.
        history: frames per observation (current last).
        text_dim: width of the text encoder's token features (384 MiniLM, 512 t5-small).
        chunk: actions predicted per call.
        action_dim, state_dim: 4 and 4 on the tabletop.
        use_state: add a proprioception token.
        channels: stem width (the residual block is twice as wide).
        d_model, num_layers, num_heads, ff_mult, dropout: the transformer.
    """

    @register_to_config
    def __init__(
        self,
        image_size: tuple[int, int] = (32, 32),
        history: int = 1,
        text_dim: int = 384,
        chunk: int = 8,
        action_dim: int = 4,
        state_dim: int = 4,
        use_state: bool = False,
        channels: int = 32,
        d_model: int = 128,
        num_layers: int = 3,
        num_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        h, w = image_size
        if h % 4 or w % 4:
            raise ValueError(f"image_size={tuple(image_size)}: H and W must be divisible by 4")
        self.stem = nn.Conv2d(3 * history, channels, 3, stride=2, padding=1)  # H/2
        self.blocks = nn.ModuleList([ResidualBlock(channels, 2 * channels)])  # H/4
        self.norm_img = nn.GroupNorm(_groups(2 * channels), 2 * channels)
        self.img_proj = nn.Conv2d(2 * channels, d_model, 1)
        self.img_pos = nn.Parameter(torch.randn(1, (h // 4) * (w // 4), d_model) * 0.02)
        self.text_proj = nn.Linear(text_dim, d_model)
        self.text_type = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.state_proj = nn.Linear(state_dim, d_model) if use_state else None
        self.queries = nn.Parameter(torch.randn(1, chunk, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward=ff_mult * d_model, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, action_dim)
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))

    # -- normalisation ---------------------------------------------------------------

    def set_stats(self, action_mean, action_std, state_mean, state_std,
                  min_std: float = 1e-3) -> None:
        """Store per-dimension action and state statistics; stds floored at ``min_std``."""
        for name, value, dim in (
            ("action_mean", action_mean, self.config.action_dim),
            ("action_std", action_std, self.config.action_dim),
            ("state_mean", state_mean, self.config.state_dim),
            ("state_std", state_std, self.config.state_dim),
        ):
            value = torch.as_tensor(value, dtype=torch.float32).reshape(dim)
            if name.endswith("std"):
                value = value.clamp_min(min_std)
            getattr(self, name).copy_(value)

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Env units -> model units; ``actions: (..., action_dim)``."""
        return (actions - self.action_mean) / self.action_std

    def unnormalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Model units -> env units; ``actions: (..., action_dim)``."""
        return actions * self.action_std + self.action_mean

    # -- network ---------------------------------------------------------------------

    def _check(self, frames: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> None:
        c = self.config
        want = (c.history, *c.image_size, 3)
        if frames.ndim != 5 or tuple(frames.shape[1:]) != want:
            raise ValueError(f"expected frames (B, {', '.join(map(str, want))}), "
                             f"got {tuple(frames.shape)}")
        if text.ndim != 3 or text.shape[-1] != c.text_dim or mask.shape != text.shape[:2]:
            raise ValueError(f"expected text (B, L, {c.text_dim}) and mask (B, L), got "
                             f"{tuple(text.shape)} and {tuple(mask.shape)}")

    def forward(
        self,
        frames: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised next actions.

        Args:
            frames: (B, history, H, W, 3), oldest first; uint8 in [0, 255] or float in
                [-1, 1].
            text: (B, L, text_dim) frozen token features; text_mask: (B, L) bool, True
                for a real token.
            state: (B, state_dim) in env units; required when ``use_state``.

        Returns:
            (B, chunk, action_dim) actions in normalised units (see ``unnormalize``).
        """
        self._check(frames, text, text_mask)
        device = self.stem.weight.device
        x = frames.to(device)
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        B = x.shape[0]

        # 1. image tokens
        h = self.stem(rearrange(x, "b t h w c -> b (t c) h w"))
        for block in self.blocks:
            h = block(h)
        h = self.img_proj(F.silu(self.norm_img(h)))
        image = rearrange(h, "b d h w -> b (h w) d") + self.img_pos

        # 2-4. text, state and query tokens, and which of them attention may see
        text_tok = self.text_proj(text.to(device).float()) + self.text_type
        queries = repeat(self.queries, "1 k d -> b k d", b=B)
        tokens = [queries, image, text_tok]
        ignore = [torch.zeros(B, queries.shape[1] + image.shape[1], dtype=torch.bool,
                              device=device), ~text_mask.to(device)]
        if self.state_proj is not None:
            if state is None:
                raise ValueError("this policy was trained with use_state=True; pass state")
            s = (state.to(device).float() - self.state_mean) / self.state_std
            tokens.append(self.state_proj(s)[:, None])
            ignore.append(torch.zeros(B, 1, dtype=torch.bool, device=device))

        # 5. transformer; the query outputs are the actions
        out = self.transformer(torch.cat(tokens, 1), src_key_padding_mask=torch.cat(ignore, 1))
        return self.head(out[:, : self.config.chunk])

    @torch.no_grad()
    def predict(self, frames, text, text_mask, state=None) -> np.ndarray:
        """Env-unit actions, clipped to [-1, 1]: np.float32 (B, chunk, action_dim).

        Arguments as ``forward``; ``frames`` may be a uint8 numpy array.
        """
        frames = torch.as_tensor(np.asarray(frames))
        state = None if state is None else torch.as_tensor(np.asarray(state))
        was_training = self.training
        self.eval()
        try:
            actions = self.unnormalize(self(frames, text, text_mask, state))
        finally:
            self.train(was_training)
        return actions.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)


def build_policy(cfg, text_dim: int) -> BCPolicy:
    """The policy an ``ExperimentConfig`` describes (``bc`` section, ``env.image_size``)."""
    b = cfg.bc
    return BCPolicy(
        image_size=tuple(cfg.env.image_size), history=b.history, text_dim=text_dim,
        chunk=b.chunk, use_state=b.use_state, channels=b.channels, d_model=b.d_model,
        num_layers=b.num_layers, num_heads=b.num_heads, ff_mult=b.ff_mult,
        dropout=b.dropout,
    )
