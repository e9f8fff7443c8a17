"""Inverse-dynamics model: shapes, saved normalisation, learning, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from inverse_dynamics.config import IDMConfig
from inverse_dynamics.model import InverseDynamicsModel
from inverse_dynamics.train import train_idm
from unipi.config import ConfigError, ExperimentConfig
from unipi.planner.config import PlannerConfig

SIZE = 16


class MovingSquare(Dataset):
    """A 4x4 square moved by the chunk's (constant) action: 2 px per unit of dx, dy.

    Suction on (action[3] > 0) paints the square red in the second frame, off green;
    dz is always 0. Items follow PairDataset: frames uint8 (2, H, W, 3),
    actions float32 (chunk, 4).
    """

    def __init__(self, n: int, chunk: int, seed: int, nan: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            dx, dy = rng.integers(-2, 3, size=2)
            grip = rng.choice([-1.0, 1.0])
            x, y = rng.integers(4, SIZE - 8, size=2)
            frames = np.zeros((2, SIZE, SIZE, 3), np.uint8)
            frames[0, y:y + 4, x:x + 4] = 255
            colour = [255, 0, 0] if grip > 0 else [0, 255, 0]
            frames[1, y + dy:y + dy + 4, x + dx:x + dx + 4] = colour
            action = np.array([dx / 2, dy / 2, 0.0, grip], np.float32)
            if nan:
                action[0] = np.nan
            self.items.append({"frames": torch.from_numpy(frames),
                               "actions": torch.from_numpy(np.tile(action, (chunk, 1)))})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def tiny_cfg(**idm) -> ExperimentConfig:
    base = dict(channels=8, hidden=32, batch_size=16, steps=4, warmup_steps=0,
                checkpoint_every=2, lr=3e-3, shift_augment=0)
    return ExperimentConfig(idm=IDMConfig(**{**base, **idm}),
                            planner=PlannerConfig(frame_stride=4, tsr_factor=2))


def test_shapes_and_input_types():
    model = InverseDynamicsModel(chunk=3, channels=8, hidden=16)
    frames = torch.randint(0, 256, (5, 2, SIZE, SIZE, 3), dtype=torch.uint8)
    out = model(frames)
    assert out.shape == (5, 3, 4)
    as_float = frames.float() / 127.5 - 1.0
    torch.testing.assert_close(model(as_float), out)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W, 3\)"):
        model(frames[:, :1])

    pred = model.predict(frames[:, 0].numpy(), frames[:, 1].numpy())
    assert pred.shape == (5, 3, 4) and pred.dtype == np.float32
    assert np.all(np.abs(pred) <= 1.0)
    assert model.predict(frames[0, 0].numpy(), frames[0, 1].numpy()).shape == (3, 4)


def test_normalisation_saved_with_weights(tmp_path):
    torch.manual_seed(0)
    model = InverseDynamicsModel(chunk=2, channels=8, hidden=16)
    model.set_action_stats(torch.tensor([0.1, -0.2, 0.0, 0.3]), torch.tensor([0.2, 0.1, 0.0, 0.9]))
    assert model.action_std[2] > 0  # floored, no division by zero
    a = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    before = model.predict(a, b)

    model.save_pretrained(tmp_path / "idm")
    loaded = InverseDynamicsModel.from_pretrained(tmp_path / "idm")
    torch.testing.assert_close(loaded.action_mean, model.action_mean)
    torch.testing.assert_close(loaded.action_std, model.action_std)
    np.testing.assert_allclose(loaded.predict(a, b), before, atol=1e-6)
    x = torch.randn(7, 4)
    torch.testing.assert_close(model.unnormalize(model.normalize(x)), x)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="idm.lr"):
        IDMConfig(lr=0.0)
    with pytest.raises(ConfigError, match="idm.val_fraction"):
        IDMConfig(val_fraction=1.5)


def test_training_learns_moving_square(tmp_path):
    cfg = tiny_cfg(steps=150, checkpoint_every=1000, warmup_steps=10, batch_size=32, lr=1e-2)
    data = (MovingSquare(256, chunk=2, seed=0), MovingSquare(64, chunk=2, seed=1))
    metrics = train_idm(cfg, tmp_path, datasets=data)

    # held-out: the motion itself is read off the frames, not only the colour cue
    val = metrics["val"]
    assert val["mse"] < 0.3 * val["baseline_mse"], val
    dx_mse, dy_mse = val["mse_per_dim"][:2]
    assert dx_mse < 0.2 and dy_mse < 0.2, val  # variance of dx and dy is 0.5
    assert val["gripper_sign_acc"] > 0.9, val
    saved = json.loads((tmp_path / "idm_metrics.json").read_text())
    assert saved["val"]["mse"] == pytest.approx(val["mse"])
    model = InverseDynamicsModel.from_pretrained(tmp_path / "idm")
    assert model.config.chunk == 2


def test_resume_equals_straight_run(tmp_path):
    cfg = tiny_cfg(shift_augment=1)
    data = (MovingSquare(64, chunk=2, seed=0), MovingSquare(16, chunk=2, seed=1))
    straight = train_idm(cfg, tmp_path / "a", datasets=data)
    train_idm(cfg, tmp_path / "b", max_steps=2, datasets=data)  # "killed" after step 2
    resumed = train_idm(cfg, tmp_path / "b", resume=True, datasets=data)

    assert straight["step"] == resumed["step"] == 4
    a = InverseDynamicsModel.from_pretrained(tmp_path / "a" / "idm").state_dict()
    b = InverseDynamicsModel.from_pretrained(tmp_path / "b" / "idm").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_non_finite_loss_stops(tmp_path):
    data = (MovingSquare(32, chunk=2, seed=0, nan=True), MovingSquare(8, chunk=2, seed=1))
    with pytest.raises(FloatingPointError, match="step=0"):
        train_idm(tiny_cfg(), tmp_path, datasets=data)
