"""A factorized space-time U-Net: the denoiser of both planner stages.

Per frame, 2-D conv ResBlocks carry the timestep embedding; after each block a 1-D conv
over frames mixes time; at the resolutions named in the config, spatial self-attention,
attention over frames and cross-attention to the instruction's tokens follow.
Conditioning frames (the tiled observation, the upsampled keyframes of the TSR stage)
are concatenated on channels with the noisy video.

Notation: B batch, C channels, F frames, H x W pixels, L text tokens, D text width.
The hidden state runs as ``((B F), C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange, repeat
from torch import nn

CHANNELS_LAST = torch.channels_last  # the hidden state's layout: token views are free


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep as a per-channel scale and shift."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, f: int) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = repeat(self.emb(emb), "b c -> (b f) c 1 1", f=f).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class TemporalConv(nn.Module):
    """Residual 1-D convolution over frames at every pixel (zero-initialised).

    Written as one linear map of the (previous, current, next) frames' channels, which
    is cheap on a channels-last hidden state.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.mix = _zero(nn.Linear(3 * channels, channels))

    def forward(self, x: torch.Tensor, f: int) -> torch.Tensor:
        h = rearrange(F.silu(self.norm(x)), "(b f) c h w -> b f h w c", f=f)
        h = F.pad(h, (0, 0, 0, 0, 0, 0, 1, 1))  # zero frames before the first, after the last
        h = torch.cat([h[:, :-2], h[:, 1:-1], h[:, 2:]], dim=-1)  # (B, F, H, W, 3C)
        return x + rearrange(self.mix(h), "b f h w c -> (b f) c h w")


class Attention(nn.Module):
    """Multi-head attention of tokens (N, S, C) to themselves or to a context (N, L, D)."""

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        self.heads = dim // head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = _zero(nn.Linear(dim, dim))

    def forward(self, x, context=None, mask=None, pos=None):
        """x (N, S, C); context (N, L, D) or None; mask (N, L) bool; pos (S, C) or None."""
        h = self.norm(x)
        h = h if pos is None else h + pos
        q = self.to_q(h)
        k, v = self.to_kv(h if context is None else context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "n s (h d) -> n h s d", h=self.heads) for t in (q, k, v))
        attn_mask = None if mask is None else rearrange(mask, "n l -> n 1 1 l")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.out(rearrange(out, "n h s d -> n s (h d)"))


class SpaceTimeLayer(nn.Module):
    """ResBlock, temporal conv, then the attentions enabled at this resolution."""

    def __init__(self, cin, cout, emb_dim, text_dim, head_dim, groups, spatial, temporal, cross):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, groups)
        self.tconv = TemporalConv(cout, groups)
        self.spatial = Attention(cout, head_dim) if spatial else None
        self.temporal = Attention(cout, head_dim) if temporal else None
        self.cross = Attention(cout, head_dim, text_dim) if cross else None

    def forward(self, x, emb, f, text, text_mask):
        x = self.tconv(self.res(x, emb, f), f)
        hw = dict(h=x.shape[-2], w=x.shape[-1])
        if self.spatial is not None:
            h = self.spatial(rearrange(x, "n c h w -> n (h w) c"))
            x = rearrange(h, "n (h w) c -> n c h w", **hw)
        if self.temporal is not None:
            pos = get_timestep_embedding(torch.arange(f, device=x.device), x.shape[1])
            h = self.temporal(rearrange(x, "(b f) c h w -> (b h w) f c", f=f), pos=pos)
            x = rearrange(h, "(b h w) f c -> (b f) c h w", **hw)
        if self.cross is not None:  # one query sequence per video: all frames, all pixels
            h = rearrange(x, "(b f) c h w -> b (f h w) c", f=f)
            h = self.cross(h, context=text, mask=text_mask)
            x = rearrange(h, "b (f h w) c -> (b f) c h w", f=f, **hw)
        return x


class SpaceTimeUNet(ModelMixin, ConfigMixin):
    """Denoiser ``(sample, timestep, text, cond) -> (B, out_channels, F, H, W)``.

    ``cond_channels`` extra input channels hold the conditioning frames (0 = none).
    ``text_film`` adds the mean text feature to the timestep embedding (as Imagen adds
    its pooled text embedding), besides cross-attention.
    With ``patch_size`` p, p x p pixels are folded into channels at the input (and
    unfolded at the output); resolution lists (``*_attention_resolutions``) refer to the
    feature maps, ``sample_size // p // 2**level``.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        cond_channels: int = 3,
        out_channels: int = 3,
        channels: tuple[int, ...] = (16, 32, 64),
        layers_per_block: int = 1,
        spatial_attention_resolutions: tuple[int, ...] = (8,),
        temporal_attention_resolutions: tuple[int, ...] = (16, 8),
        cross_attention_resolutions: tuple[int, ...] = (16, 8),
        text_dim: int = 384,
        head_dim: int = 16,
        norm_groups: int = 8,
        patch_size: int = 1,
        text_film: bool = False,
    ):
        super().__init__()
        emb_dim = 4 * channels[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(channels[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # the mean of the instruction's token features joins the timestep embedding, so
        # every ResBlock's scale and shift (FiLM) can depend on what was asked
        self.text_mlp = nn.Sequential(
            nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        ) if text_film else None
        self.null_text = nn.Parameter(torch.zeros(1, 1, text_dim))  # always attendable
        cin = (in_channels + cond_channels) * patch_size**2  # pixels folded into channels
        self.conv_in = nn.Conv2d(cin, channels[0], 3, padding=1)

        def layer(cin, cout, level):
            res = sample_size // patch_size // 2**level
            return SpaceTimeLayer(
                cin, cout, emb_dim, text_dim, head_dim, norm_groups,
                res in spatial_attention_resolutions, res in temporal_attention_resolutions,
                res in cross_attention_resolutions,
            )

        n = len(channels)
        self.down = nn.ModuleList(
            nn.ModuleList(layer(channels[max(i - 1, 0)] if j == 0 else channels[i], channels[i], i)
                          for j in range(layers_per_block)) for i in range(n))
        self.downsample = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i], 3, stride=2, padding=1) for i in range(n - 1))
        self.mid = layer(channels[-1], channels[-1], n - 1)
        self.up = nn.ModuleList(
            nn.ModuleList(layer(2 * channels[i] if j == 0 else channels[i], channels[i], i)
                          for j in range(layers_per_block)) for i in range(n))
        self.upsample = nn.ModuleList(
            nn.Conv2d(channels[i + 1], channels[i], 3, padding=1) for i in range(n - 1))
        self.norm_out = nn.GroupNorm(norm_groups, channels[0])
        self.conv_out = _zero(nn.Conv2d(channels[0], out_channels * patch_size**2, 3, padding=1))

    def _check(self, sample, timestep, text, text_mask, cond):
        c = self.config
        b, cin, f, h, w = sample.shape if sample.ndim == 5 else (None,) * 5
        factor = c.patch_size * 2 ** (len(c.channels) - 1)
        if cin != c.in_channels or h % factor or w % factor:
            raise ValueError(f"sample: expected (B, {c.in_channels}, F, H, W) with H, W "
                             f"divisible by {factor}, got {tuple(sample.shape)}")
        if c.cond_channels and (cond is None or cond.shape != (b, c.cond_channels, f, h, w)):
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond: expected {(b, c.cond_channels, f, h, w)}, got {got}")
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != c.text_dim:
            raise ValueError(f"encoder_hidden_states: expected ({b}, L, {c.text_dim}), "
                             f"got {tuple(text.shape)}")
        if text_mask is not None and text_mask.shape != text.shape[:2]:
            raise ValueError(f"encoder_attention_mask: expected {tuple(text.shape[:2])}, "
                             f"got {tuple(text_mask.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        return timestep.expand(b) if timestep.numel() == 1 else timestep

    def _embed(self, timestep, text, text_mask):
        emb = self.time_mlp(get_timestep_embedding(timestep, self.config.channels[0]))
        b = text.shape[0]
        if self.text_mlp is not None:
            weights = (torch.ones(text.shape[:2], device=text.device) if text_mask is None
                       else text_mask.to(text.dtype))
            pooled = (text * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
            emb = emb + self.text_mlp(pooled)
        text = torch.cat([self.null_text.expand(b, -1, -1).to(text.dtype), text], dim=1)
        if text_mask is None:
            return emb, text, None
        ones = text_mask.new_ones(b, 1)
        return emb, text, torch.cat([ones, text_mask.bool()], dim=1)

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask=None,
                cond=None):
        """sample (B, C_in, F, H, W); timestep (B,) or scalar; encoder_hidden_states
        (B, L, D); encoder_attention_mask (B, L) bool, True = a real token;
        cond (B, C_cond, F, H, W) -> (B, C_out, F, H, W)."""
        timestep = self._check(sample, timestep, encoder_hidden_states,
                               encoder_attention_mask, cond)
        f = sample.shape[2]
        emb, text, mask = self._embed(timestep, encoder_hidden_states, encoder_attention_mask)
        x = sample if cond is None or not self.config.cond_channels else torch.cat(
            [sample, cond.to(sample.dtype)], dim=1)
        x = rearrange(x, "b c f h w -> (b f) c h w").contiguous(memory_format=CHANNELS_LAST)
        x = self.conv_in(F.pixel_unshuffle(x, self.config.patch_size))
        args = (emb, f, text, mask)

        # 1. down: keep each level's output for the skip connection
        skips = []
        for i, layers in enumerate(self.down):
            for lay in layers:
                x = lay(x, *args)
            skips.append(x)
            if i < len(self.downsample):
                x = self.downsample[i](x)

        # 2. bottom, then up with skips
        x = self.mid(x, *args)
        for i in reversed(range(len(self.up))):
            if i < len(self.upsample):
                x = self.upsample[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
            x = torch.cat([x, skips[i]], dim=1)
            for lay in self.up[i]:
                x = lay(x, *args)
        x = F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(x))), self.config.patch_size)
        return rearrange(x, "(b f) c h w -> b c f h w", f=f)
