"""Tiny random stand-ins of the metric networks, with the real ones' interfaces, for
tests: they are saved the way the real weights come (TorchScript files, a CLIP folder
written by ``save_pretrained``) and go through the same loading code.

    save_tiny_inception(path)   (N, 3, 299, 299) in [-1, 1] -> (N, dim)
    save_tiny_i3d(path)         net(x (B, 3, T, H, W), rescale=, resize=, return_features=)
    save_tiny_clip(folder)      CLIPModel + tokenizer, 32x32 images, 77-token context
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WORDS = ("place put move the a red blue green yellow block in on of to left right bowl "
         "front behind").split()


class TinyInception(nn.Module):
    """Random features of a 4x4 grid of region means: the FID InceptionV3's interface."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != 299 or x.shape[3] != 299:
            raise ValueError("TinyInception expects (N, 3, 299, 299)")
        if float(x.min()) < -1.0 or float(x.max()) > 1.0:
            raise ValueError("TinyInception expects inputs in [-1, 1]")
        return torch.tanh(self.proj(F.adaptive_avg_pool2d(x, 4).flatten(1)))


class TinyI3D(nn.Module):
    """StyleGAN-V's I3D calling convention; random features of a (4, 2, 2) grid of
    space-time means of the frames and of their change from frame to frame (so that
    the order of frames matters); needs at least ``min_frames`` frames."""

    def __init__(self, dim: int = 8, min_frames: int = 16):
        super().__init__()
        self.proj = nn.Linear(2 * 3 * 4 * 2 * 2, dim)
        self.min_frames = min_frames

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] < self.min_frames:
            raise ValueError("TinyI3D expects (B, 3, T >= min_frames, H, W)")
        if rescale:
            x = x / 127.5 - 1.0  # [0, 255] -> [-1, 1]
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear",
                              align_corners=False)
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs() * 10.0
        grid = [F.adaptive_avg_pool3d(v, (4, 2, 2)).flatten(1) for v in (x, motion)]
        return torch.tanh(self.proj(torch.cat(grid, dim=1)))


def _save_script(module: nn.Module, path: str | Path, seed: int) -> Path:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def save_tiny_inception(path: str | Path, dim: int = 16, seed: int = 0) -> Path:
    return _save_script(TinyInception(dim), path, seed)


def save_tiny_i3d(path: str | Path, dim: int = 8, min_frames: int = 16, seed: int = 1) -> Path:
    return _save_script(TinyI3D(dim, min_frames), path, seed)


def save_tiny_clip(folder: str | Path, seed: int = 2) -> Path:
    """A random 1-layer CLIP (32x32 images, 77-token context) and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    folder = Path(folder)
    vocab = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>", *WORDS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 2), ("<|endoftext|>", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                            bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                            model_max_length=77).save_pretrained(folder)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3, **small),
        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=8)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(folder)
    return folder
