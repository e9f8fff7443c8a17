"""Tiny stand-ins for tests and benchmarks: a random T5 with a local tokenizer, and
config overrides that make both U-Nets a few thousand parameters at 16x16."""

from __future__ import annotations

from pathlib import Path

WORDS = ("move the square left right up down put red blue green block in bowl a of on "
         "to pick place").split()


def save_tiny_t5(folder: str | Path, vocab_size: int = 1024, real_words: bool = True) -> Path:
    """Write a random 1-layer T5 encoder and a WordLevel tokenizer to ``folder``.

    ``vocab_size`` < 1000 or ``real_words=False`` (every word unknown) make the
    placeholder tokenizers that ``TextEncoder`` must refuse.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    folder = Path(folder)
    specials = ["<pad>", "</s>", "<unk>"]
    words = list(WORDS) if real_words else []
    vocab = specials + words + [f"tok{i}" for i in range(vocab_size - len(specials) - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    config = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(folder)
    return folder


def tiny_overrides(image_size: int = 16) -> list[str]:
    """Dotted overrides for ``unipi.config.load_config``: 4 keyframes, channels (8, 16)."""
    out = ["planner.num_keyframes=4", "planner.frame_stride=2", "planner.tsr_factor=2",
           f"env.image_size=[{image_size},{image_size}]", "data.workers=0",
           "planner.train.batch_size=4", "planner.sampling.num_inference_steps=2"]
    for s in ("base", "tsr"):
        out += [f"planner.{s}.patch_size=1", f"planner.{s}.channels=[8,16]",
                f"planner.{s}.head_dim=8", f"planner.{s}.norm_groups=4",
                f"planner.{s}.spatial_attention_resolutions=[8]",
                f"planner.{s}.temporal_attention_resolutions=[8]",
                f"planner.{s}.cross_attention_resolutions=[16,8]"]
    return out
