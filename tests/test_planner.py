"""The video planner's parts at tiny sizes: U-Net, diffusion helpers, pipeline, config."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unipi.config import ConfigError, load_config  # noqa: E402
from unipi.planner.diffusion import (  # noqa: E402
    make_sampling_scheduler, make_unet, motion_weights, upsample_time,
)
from unipi.planner.pipeline import UniPiPipeline  # noqa: E402
from unipi.planner.testing import save_tiny_t5, tiny_overrides  # noqa: E402
from unipi.planner.text import TextEncoder  # noqa: E402
from unipi.planner.unet import SpaceTimeUNet  # noqa: E402

SIZE = 16


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    return TextEncoder("t5", str(save_tiny_t5(tmp_path_factory.mktemp("t5"))))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised layers weights, so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def make_pipe(text_encoder, overrides=(), scheduler="ddim") -> UniPiPipeline:
    cfg = load_config(None, tiny_overrides(SIZE) + list(overrides))
    p = cfg.planner
    base = randomize(make_unet("base", p, SIZE, text_encoder.dim), 1)
    tsr = randomize(make_unet("tsr", p, SIZE, text_encoder.dim), 2) if p.hierarchy else None
    return UniPiPipeline(text_encoder, base, tsr, make_sampling_scheduler(scheduler, p.diffusion), p)


def images(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)


def plan(pipe, image, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    texts = ["move the square left", "move the square up"][: len(image)]
    return pipe(image, texts, num_inference_steps=2, generator=g, **kwargs)


# ------------------------------------------------------------------------------ U-Net
def tiny_unet(**kwargs) -> SpaceTimeUNet:
    args = dict(sample_size=SIZE, channels=(8, 16), head_dim=8, norm_groups=4, text_dim=32,
                spatial_attention_resolutions=(8,), temporal_attention_resolutions=(8,),
                cross_attention_resolutions=(16, 8))
    return randomize(SpaceTimeUNet(**{**args, **kwargs}))


def unet_inputs(b=2, f=4, cond_channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, f, SIZE, SIZE, generator=g)
    cond = torch.randn(b, cond_channels, f, SIZE, SIZE, generator=g)
    text = torch.randn(b, 5, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:b]
    return x, torch.tensor([10, 500])[:b], text, mask, cond


@pytest.mark.parametrize("patch_size", [1, 2])
def test_unet_output_shape(patch_size):
    net = tiny_unet(patch_size=patch_size)
    out = net(*unet_inputs())
    assert out.shape == (2, 3, 4, SIZE, SIZE)
    assert torch.isfinite(out).all()


def test_unet_refuses_bad_shapes():
    net = tiny_unet()
    x, t, text, mask, cond = unet_inputs()
    with pytest.raises(ValueError, match="sample"):
        net(x[:, :2], t, text, mask, cond)
    with pytest.raises(ValueError, match="cond"):
        net(x, t, text, mask, cond[:, :, :3])
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        net(x, t, text[..., :8], mask, cond)


def test_tiled_first_frame_reaches_every_frame():
    net = tiny_unet()
    x, t, text, mask, cond = unet_inputs()
    other = cond.clone()
    other[:, :, :] = torch.randn(2, 3, 1, SIZE, SIZE)  # a different observation, tiled
    with torch.no_grad():
        a, b = net(x, t, text, mask, cond), net(x, t, text, mask, other)
    per_frame = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert (per_frame > 1e-4).all(), per_frame


@pytest.mark.parametrize("stage", ["base", "tsr"])
def test_make_condition_tiles_the_observation_on_every_frame(stage):
    from unipi.planner.diffusion import make_condition

    p = load_config(None, tiny_overrides(SIZE)).planner
    first = torch.rand(2, 3, SIZE, SIZE)
    coarse = torch.rand(2, 3, 4, SIZE, SIZE) if stage == "tsr" else None
    cond = make_condition(stage, p, first, 7, coarse)
    tiled = cond[:, -3:]  # the observation's channels come last
    assert cond.shape == (2, 6 if stage == "tsr" else 3, 7, SIZE, SIZE)
    for f in range(7):
        torch.testing.assert_close(tiled[:, :, f], first)
    replaced = load_config(None, tiny_overrides(SIZE) + ["planner.conditioning=replace"])
    assert make_condition("base", replaced.planner, first, 7) is None  # not tiled


def test_text_film_makes_every_block_depend_on_the_instruction():
    net = tiny_unet(text_film=True, cross_attention_resolutions=())
    x, t, text, mask, cond = unet_inputs()
    with torch.no_grad():
        a = net(x, t, text, mask, cond)
        b = net(x, t, text + 1.0, mask, cond)  # no cross-attention: only FiLM sees text
        c = net(x, t, text.masked_fill(~mask[..., None], 5.0), mask, cond)  # padding only
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(a, c)


def test_fully_masked_text_is_finite():
    net = tiny_unet()
    x, t, text, mask, cond = unet_inputs()
    out = net(x, t, torch.zeros_like(text), torch.zeros_like(mask), cond)
    assert torch.isfinite(out).all()


# -------------------------------------------------------------------- diffusion helpers
def test_upsample_time_keeps_keyframes_and_interpolates():
    coarse = torch.arange(3.0).reshape(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    fine = upsample_time(coarse, 2)
    assert fine.shape == (1, 1, 5, 2, 2)
    assert fine[0, 0, :, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_motion_weights_mark_changed_pixels():
    cfg = load_config(None, ["planner.diffusion.motion_weight=4"]).planner.diffusion
    x0 = torch.zeros(1, 3, 3, 4, 4)
    x0[0, 1, 2, 1, 1] = 0.5
    w = motion_weights(x0, cfg)
    assert w[0, 0, 2, 1, 1] == 5 and w.sum() == w.numel() + 4


# -------------------------------------------------------------------------- pipeline
def test_plan_shapes_and_pinned_first_frame(text_encoder):
    image = images()
    out = plan(make_pipe(text_encoder), image, return_keyframes=True)
    assert out.videos.shape == (2, 7, SIZE, SIZE, 3) and out.videos.dtype == np.uint8
    assert out.keyframes.shape == (2, 4, SIZE, SIZE, 3)
    assert (out.videos[:, 0] == image).all()
    assert (out.videos[:, ::2] == out.keyframes).all()  # TSR keeps the keyframes


def test_residual_target_round_trip():
    from unipi.planner.diffusion import from_target, split_clip, target_range, to_target

    cfg = load_config(None, tiny_overrides(SIZE) + ["planner.diffusion.residual=true"])
    d = cfg.planner.diffusion
    video = torch.rand(2, 3, 4, SIZE, SIZE) * 2 - 1
    x0, cond, known = split_clip(video, "base", cfg.planner)
    assert known == [0] and (x0[:, :, 0] == 0).all() and target_range(d) == 2.0
    torch.testing.assert_close(cond[:, :, 2], video[:, :, 0])  # tiling stays in image space
    torch.testing.assert_close(from_target(to_target(video, video[:, :, 0], d),
                                           video[:, :, 0], d), video)


def test_sample_prediction_targets_x0_with_truncated_min_snr():
    from diffusers import DDPMScheduler

    from unipi.planner.diffusion import diffusion_loss, snr_weights

    d = load_config(None, ["planner.diffusion.prediction_type=sample",
                           "planner.diffusion.snr_gamma=5", "planner.diffusion.motion_weight=0",
                           "planner.diffusion.text_dropout=0"]).planner.diffusion
    abar = torch.tensor([0.001, 0.5, 0.8, 0.999])  # SNR ~0.001, 1, 4, 999
    torch.testing.assert_close(snr_weights(abar, d), torch.tensor([1.0, 1.0, 4.0, 5.0]),
                               rtol=1e-3, atol=1e-3)

    class Oracle(torch.nn.Module):  # predicts the clean clip: the loss must be 0
        def forward(self, x_t, t, text, mask, cond):
            return x0

    x0 = torch.rand(2, 3, 4, SIZE, SIZE) * 2 - 1
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="sample")
    loss, _ = diffusion_loss(Oracle(), scheduler, x0, None, torch.zeros(2, 3, 8),
                             torch.ones(2, 3, dtype=torch.bool), [0], d,
                             torch.Generator().manual_seed(0))
    assert loss.item() == 0.0


def test_single_image_and_string(text_encoder):
    out = make_pipe(text_encoder)(images(1)[0], "move the square left", num_inference_steps=2)
    assert out.videos.shape == (1, 7, SIZE, SIZE, 3)


def test_same_seed_same_plan_other_seed_other_plan(text_encoder):
    pipe, image = make_pipe(text_encoder), images()
    a, b, c = plan(pipe, image, 0), plan(pipe, image, 0), plan(pipe, image, 1)
    assert (a.videos == b.videos).all()
    assert (a.videos != c.videos).any()


def test_guidance_scale_changes_plan(text_encoder):
    pipe, image = make_pipe(text_encoder), images()
    a = plan(pipe, image, guidance_scale=1.0).videos
    b = plan(pipe, image, guidance_scale=3.0).videos
    assert (a != b).any()


def test_save_load_round_trip(text_encoder, tmp_path):
    pipe, image = make_pipe(text_encoder, scheduler="dpmsolver++"), images()
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "base_unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = UniPiPipeline.from_pretrained(tmp_path)  # text encoder from its own source
    assert type(loaded.scheduler) is type(pipe.scheduler)
    assert (plan(pipe, image).videos == plan(loaded, image).videos).all()


@pytest.mark.parametrize("overrides, frames", [
    (["planner.diffusion.residual=true"], 7),
    (["planner.diffusion.residual=true", "planner.base.text_film=true"], 7),
    (["planner.diffusion.residual=true", "planner.diffusion.prediction_type=sample"], 7),
    (["planner.conditioning=replace"], 7),
    (["planner.conditioning=none"], 7),
    (["planner.hierarchy=false"], 7),
    (["planner.hierarchy=false", "planner.tsr_factor=1"], 4),
])
def test_ablations_run(text_encoder, overrides, frames):
    image = images()
    out = plan(make_pipe(text_encoder, overrides), image)
    assert out.videos.shape == (2, frames, SIZE, SIZE, 3)
    assert (out.videos[:, 0] == image).all()


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, key", [
    ("planner.conditioning=first", "planner.conditioning"),
    ("planner.frame_stride=3", "planner.frame_stride"),
    ("planner.base.channels=[12,24]", "planner.base.channels"),
    ("planner.tsr.spatial_attention_resolutions=[6]", "planner.tsr.spatial_attention_resolutions"),
    ("planner.diffusion.prediction_type=x0", "planner.diffusion.prediction_type"),
    ("planner.sampling.scheduler=euler", "planner.sampling.scheduler"),
    ("planner.train.ema_decay=1.5", "planner.train.ema_decay"),
    ("text_encoder.type=clip", "text_encoder.type"),
])
def test_bad_config_values_are_refused_by_name(override, key):
    with pytest.raises((ConfigError, ValueError), match=key.replace(".", r"\.")):
        load_config(None, [override])
