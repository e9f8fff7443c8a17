"""Behaviour-cloning baseline: shapes, saved normalisation, learning, exact resume, the eval
harness on a BC folder, and the comparison table end to end with tiny models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from unipi.baselines.bc import BCPolicy
from unipi.baselines.config import BCConfig
from unipi.baselines.data import BCDataset
from unipi.baselines.train import train_bc
from unipi.cli import main
from unipi.config import ConfigError, ExperimentConfig, load_config
from unipi.data import DatasetFormatError
from unipi.planner.testing import save_tiny_t5, tiny_overrides

SIZE = 16
ROOT = Path(__file__).resolve().parents[1]
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, 1.0), "down": (0.0, -1.0)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the CPUs are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def text_encoder(t5):
    from unipi.planner.text import TextEncoder

    return TextEncoder("t5", str(t5), max_length=16)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Four real expert episodes at 16x16, every one with its actions."""
    from unipi.data.collect import collect

    root = tmp_path_factory.mktemp("demos")
    collect(root, 4, families=("place", "relation"), image_size=(SIZE, SIZE),
            labelled_fraction=1.0, episode_steps=56, progress=False)
    return root


class MovingSquare(Dataset):
    """A 4x4 square; the instruction says where to move it, the image says the rest.

    Action (constant over the chunk): (dx, dy) from the instruction's direction, dz =
    the square's row scaled to [-1, 1] (read off the image), suction on when the square
    is red, off when green. Items follow BCDataset.
    """

    def __init__(self, n: int, chunk: int, seed: int, nan: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            word = list(DIRECTIONS)[rng.integers(4)]
            x, y = rng.integers(0, SIZE - 4, size=2)
            red = bool(rng.integers(2))
            frame = np.zeros((1, SIZE, SIZE, 3), np.uint8)
            frame[0, y:y + 4, x:x + 4] = [255, 0, 0] if red else [0, 255, 0]
            dz = 2.0 * y / (SIZE - 4) - 1.0
            action = np.array([*DIRECTIONS[word], dz, 1.0 if red else -1.0], np.float32)
            if nan:
                action[0] = np.nan
            self.items.append({
                "frames": torch.from_numpy(frame), "state": torch.zeros(4),
                "instruction": f"move the square {word}",
                "actions": torch.from_numpy(np.tile(action, (chunk, 1))),
            })

    @property
    def instructions(self) -> list[str]:
        return sorted({it["instruction"] for it in self.items})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def tiny_cfg(t5, **bc) -> ExperimentConfig:
    base = dict(channels=8, d_model=32, num_layers=1, num_heads=4, ff_mult=2, chunk=2,
                execute=2, batch_size=16, steps=4, warmup_steps=0, checkpoint_every=2,
                lr=3e-3, shift_augment=0, dropout=0.0)
    overrides = [f"bc.{k}={v}" for k, v in {**base, **bc}.items()]
    return load_config(None, tiny_overrides(SIZE) + overrides + [
        "text_encoder.type=t5", f"text_encoder.name_or_path={t5}"])


def _inputs(policy, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = policy.config
    frames = torch.randint(0, 256, (batch, c.history, *c.image_size, 3), generator=g,
                           dtype=torch.uint8)
    text = torch.randn(batch, 5, c.text_dim, generator=g)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter instruction
    return frames, text, mask, torch.randn(batch, 4, generator=g)


def test_shapes_and_input_types():
    torch.manual_seed(0)
    policy = BCPolicy(image_size=(SIZE, SIZE), history=2, text_dim=12, chunk=3, channels=8,
                      d_model=16, num_layers=1, use_state=True, dropout=0.0).eval()
    frames, text, mask, state = _inputs(policy)
    out = policy(frames, text, mask, state)
    assert out.shape == (3, 3, 4)
    torch.testing.assert_close(policy(frames.float() / 127.5 - 1.0, text, mask, state), out)

    # padding tokens are ignored: changing them changes nothing
    text2 = text.clone()
    text2[0, 3:] = 100.0
    torch.testing.assert_close(policy(frames, text2, mask, state)[0], out[0])

    with pytest.raises(ValueError, match=r"expected frames \(B, 2, 16, 16, 3\)"):
        policy(frames[:, :1], text, mask, state)
    with pytest.raises(ValueError, match="use_state=True"):
        policy(frames, text, mask)
    pred = policy.predict(frames.numpy(), text, mask, state.numpy())
    assert pred.shape == (3, 3, 4) and pred.dtype == np.float32
    assert np.all(np.abs(pred) <= 1.0)


def test_normalisation_saved_with_weights(tmp_path):
    torch.manual_seed(0)
    policy = BCPolicy(image_size=(SIZE, SIZE), text_dim=12, chunk=2, channels=8, d_model=16,
                      num_layers=1, use_state=True)
    policy.set_stats([0.1, -0.2, 0.0, 0.3], [0.2, 0.1, 0.0, 0.9], [0.5, 0, 0.1, 0], [1, 2, 3, 4])
    assert policy.action_std[2] > 0  # floored, no division by zero
    x = torch.randn(7, 4)
    torch.testing.assert_close(policy.unnormalize(policy.normalize(x)), x)

    frames, text, mask, state = _inputs(policy)
    before = policy.predict(frames, text, mask, state)
    policy.save_pretrained(tmp_path / "bc")
    loaded = BCPolicy.from_pretrained(tmp_path / "bc")
    for name in ("action_mean", "action_std", "state_mean", "state_std"):
        torch.testing.assert_close(getattr(loaded, name), getattr(policy, name))
    np.testing.assert_array_equal(loaded.predict(frames, text, mask, state), before)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"bc.execute=9: must be <= bc.chunk=8"):
        BCConfig(execute=9)
    with pytest.raises(ConfigError, match="bc.episodes='some'"):
        load_config(ROOT / "configs" / "tabletop.yaml", ["bc.episodes=some"])
    with pytest.raises(ConfigError, match="bc.d_model=30"):
        BCConfig(d_model=30, num_heads=4)


def test_dataset_of_real_demos(demos, tmp_path):
    train = BCDataset(demos, history=2, chunk=8, subset="train", val_fraction=0.25)
    val = BCDataset(demos, history=2, chunk=8, subset="val", val_fraction=0.25)
    assert len(train.episodes) == 3 and len(val.episodes) == 1
    seeds = {e.record.seed for e in train.episodes}
    assert not seeds & {e.record.seed for e in val.episodes}
    first, last = train[0], train[len(train) - 1]
    assert first["frames"].shape == (2, SIZE, SIZE, 3) and first["frames"].dtype == torch.uint8
    assert torch.equal(first["frames"][0], first["frames"][1])  # frame 0 repeated
    assert first["actions"].shape == (8, 4) and first["state"].shape == (4,)
    ep = train.episodes[-1]
    np.testing.assert_array_equal(last["actions"][0].numpy(), ep.actions[-1])
    assert torch.all(last["actions"][1:] == 0)  # past the end: the arm at rest

    # a dataset where only some episodes kept their actions
    from unipi.data.collect import collect

    half = tmp_path / "half"
    collect(half, 2, families=("place",), image_size=(SIZE, SIZE), labelled_fraction=0.5,
            episode_steps=40, progress=False)
    assert len(BCDataset(half, 1, 4, subset="all", episodes="labelled").episodes) == 1
    with pytest.raises(DatasetFormatError, match="1 of 2 episodes .* --labelled-fraction 1.0"):
        BCDataset(half, 1, 4, episodes="all")


def test_training_learns_from_image_and_instruction(tmp_path, t5, text_encoder):
    cfg = tiny_cfg(t5, steps=200, warmup_steps=10, batch_size=32, lr=3e-3,
                   checkpoint_every=1000, num_layers=2)
    data = (MovingSquare(384, chunk=2, seed=0), MovingSquare(96, chunk=2, seed=1))
    metrics = train_bc(cfg, tmp_path, datasets=data, text_encoder=text_encoder)

    val = metrics["val"]  # held-out squares: measured against predicting the mean action
    assert val["mse"] < 0.05 * val["baseline_mse"], val  # measured: 0.0008 vs 0.59
    dx, dy, dz, _ = val["mse_per_dim"]
    assert dx < 0.05 and dy < 0.05, val  # from the instruction (variance 0.5 each)
    assert dz < 0.05, val  # from the image (variance ~0.4)
    assert val["gripper_sign_acc"] > 0.9, val
    saved = json.loads((tmp_path / "bc_metrics.json").read_text())
    assert saved["val"]["mse"] == pytest.approx(val["mse"])
    assert saved["budget"]["steps"] == 200 and saved["budget"]["train_samples"] == 384
    assert (tmp_path / "config.json").is_file()  # the run folder is a model folder


def test_fits_a_few_real_demonstrations(demos, tmp_path, t5, text_encoder):
    """On four expert episodes, the training action error falls well below the mean's."""
    data = BCDataset(demos, history=1, chunk=4, subset="all")
    cfg = tiny_cfg(t5, steps=150, warmup_steps=10, batch_size=32, lr=3e-3, chunk=4,
                   execute=4, num_layers=2, checkpoint_every=1000)
    fit = train_bc(cfg, tmp_path, datasets=(data, data), text_encoder=text_encoder)["val"]
    assert fit["mse"] < 0.4 * fit["baseline_mse"], fit  # measured: 0.10 vs 0.28 at 100 steps
    assert fit["gripper_sign_acc"] > 0.9, fit


def test_resume_equals_straight_run(tmp_path, t5, text_encoder):
    cfg = tiny_cfg(t5, shift_augment=1, dropout=0.2)  # augmentation and dropout both drawn
    data = (MovingSquare(64, chunk=2, seed=0), MovingSquare(16, chunk=2, seed=1))
    straight = train_bc(cfg, tmp_path / "a", datasets=data, text_encoder=text_encoder)
    train_bc(cfg, tmp_path / "b", max_steps=2, datasets=data, text_encoder=text_encoder)
    resumed = train_bc(cfg, tmp_path / "b", resume=True, datasets=data,
                       text_encoder=text_encoder)

    assert straight["step"] == resumed["step"] == 4
    assert straight["train_loss"] == resumed["train_loss"]
    a = BCPolicy.from_pretrained(tmp_path / "a" / "bc").state_dict()
    b = BCPolicy.from_pretrained(tmp_path / "b" / "bc").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_non_finite_loss_stops(tmp_path, t5, text_encoder):
    data = (MovingSquare(32, chunk=2, seed=0, nan=True), MovingSquare(8, chunk=2, seed=1))
    with pytest.raises(FloatingPointError, match="step=0"):
        train_bc(tiny_cfg(t5), tmp_path, datasets=data, text_encoder=text_encoder)


def test_cli_trains_a_bc_folder_that_eval_runs(demos, t5, tmp_path, capsys):
    out = tmp_path / "bc"
    overrides = tiny_overrides(SIZE) + [
        f"data.root={demos}", "text_encoder.type=t5", f"text_encoder.name_or_path={t5}",
        "bc.steps=2", "bc.warmup_steps=0", "bc.batch_size=8", "bc.channels=8",
        "bc.d_model=16", "bc.num_layers=1", "bc.val_fraction=0.25", "bc.history=2",
        "agent.max_steps=10",
    ]
    assert main(["train", "bc", "--config", str(ROOT / "configs" / "tabletop.yaml"),
                 "--out", str(out), *overrides]) == 0
    assert "BC held-out metrics" in capsys.readouterr().out

    ev = tmp_path / "eval"
    assert main(["eval", "--episodes", "1", "--model", str(out), "--out", str(ev),
                 "--video-episodes", "1"]) == 0
    info = json.loads((ev / "eval_info.json").read_text())
    assert len(info["episodes"]) == 4 and info["summary"]["agent"] == "bc"
    assert all(e["steps"] <= 10 for e in info["episodes"])  # agent.max_steps is honoured
    assert all((ev / v).is_file() for v in info["videos"]) and len(info["videos"]) == 4
    assert "| bc | place | novel |" in capsys.readouterr().out

    # the same seeds as any other agent
    from unipi.evaluate import cell_seed

    assert info["episodes"][0]["seed"] == cell_seed("place", "seen", 0)

    # planner-only options are refused in one line
    assert main(["eval", "--episodes", "1", "--model", str(out), "--out", str(ev),
                 "--open-loop"]) == 2
    assert "--open-loop apply to the planner" in capsys.readouterr().err


def test_compare_tiny_writes_the_table(tmp_path):
    spec = importlib.util.spec_from_file_location("compare", ROOT / "benchmarks" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = compare  # dataclasses look their module up
    try:
        spec.loader.exec_module(compare)
    finally:
        del sys.modules["compare"]

    result = compare.main(["--tiny", "--out", str(tmp_path)])
    md = (tmp_path / "compare.md").read_text()
    data = json.loads((tmp_path / "compare.json").read_text())
    names = [r["name"] for r in data["rows"]]
    assert names == ["unipi", "no_frame_cond", "no_tiling", "no_hierarchy", "bc", "expert"]
    assert "| method | Place seen | Place novel | Relation seen | Relation novel |" in md
    for row in data["rows"]:
        assert set(row["cells"]) == {"place/seen", "place/novel", "relation/seen",
                                     "relation/novel"}
        for cell in row["cells"].values():
            assert 0 <= cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1] <= 1
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["unipi"]["budget"]["planner_steps"] == {"base": 2, "tsr": 2}
    assert rows["no_hierarchy"]["budget"]["planner_steps"] == {"base": 4, "tsr": 0}
    assert rows["bc"]["budget"]["bc_steps"] == 2
    assert rows["expert"]["cells"]["place/seen"]["mean"] == 1.0
    assert result["table"] == md.strip()
    # the ablation really changed the planner
    cfg = json.loads((tmp_path / "models" / "no_tiling_s0" / "config.json").read_text())
    assert cfg["planner"]["conditioning"] == "replace"
    # plan-level scores for the rows that plan, in the JSON and the markdown
    for name in ("unipi", "no_frame_cond", "no_tiling", "no_hierarchy"):
        plans = rows[name]["plans"]
        assert set(plans) == set(rows[name]["cells"])
        assert all(c["n"] == 1 and 0 <= c["success"] <= 1 for c in plans.values())
    assert rows["bc"]["plans"] is None and rows["expert"]["plans"] is None
    assert "Plan level (the imagined video alone" in md

    # --idm shares a trained IDM: nothing is trained for it, its budget is reported
    again = compare.main(["--tiny", "--out", str(tmp_path), "--variants", "unipi",
                          "--idm", str(tmp_path / "runs" / "idm_s0")])
    budget = again["rows"][0]["budget"]
    assert budget["idm_from"] == str(tmp_path / "runs" / "idm_s0")
    assert budget["idm_steps"] == 2
    with pytest.raises(SystemExit) as exit_info:  # refused before any work, exit 2
        compare.main(["--tiny", "--out", str(tmp_path / "refused"), "--variants", "unipi",
                      "--idm", str(tmp_path / "data")])
    assert exit_info.value.code == 2 and not (tmp_path / "refused").exists()
