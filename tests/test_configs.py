"""Every shipped config loads, validates, and describes models that can be built."""

from pathlib import Path

import pytest
import torch

from unipi.config import load_config
from unipi.planner.diffusion import make_unet

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_both_unets(path):
    cfg = load_config(path)
    h, w = cfg.env.image_size
    p = cfg.planner
    for stage in ("base", "tsr") if p.hierarchy else ("base",):
        unet = make_unet(stage, p, h, 32)
        frames = p.stage_clip(stage)[0]
        x = torch.zeros(1, 3, frames, h, w)
        cond = torch.zeros(1, unet.config.cond_channels, frames, h, w)
        with torch.no_grad():
            out = unet(x, 10, torch.zeros(1, 2, 32), None, cond)
        assert out.shape == x.shape


def test_image_size_the_unet_cannot_take_is_refused():
    with pytest.raises(ValueError, match=r"planner\.base\.channels"):
        load_config(None, ["env.image_size=[36,36]"])
