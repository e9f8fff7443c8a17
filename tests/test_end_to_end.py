"""The whole path with tiny models: collect, train every stage, export, plan, evaluate."""

import json

import numpy as np
import pytest

from unipi.cli import main
from unipi.planner.testing import save_tiny_t5, tiny_overrides


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, run = root / "data", root / "run"
    assert main(["collect", "--env", "all", "--episodes", "4", "--image-size", "16x16",
                 "--labelled-fraction", "1.0", "--episode-steps", "56",
                 "--out", str(data)]) == 0
    t5 = save_tiny_t5(root / "t5")
    overrides = tiny_overrides(16) + [
        f"data.root={data}", "text_encoder.type=t5", f"text_encoder.name_or_path={t5}",
        "planner.train.checkpoint_every=1", "idm.steps=2", "idm.warmup_steps=0",
        "idm.checkpoint_every=1", "idm.batch_size=8", "idm.channels=8", "idm.hidden=16",
        "agent.num_inference_steps=2", "agent.replan_every=4",
    ]
    cfg = ["--config", "configs/tabletop.yaml", "--out", str(run), "--max-steps", "2"]
    for stage in ("base", "tsr"):
        assert main(["train", "planner", "--stage", stage, *cfg, *overrides]) == 0
    assert main(["train", "idm", *cfg, *overrides]) == 0
    out = root / "model"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    return out


def test_plan_from_the_env_starts_at_the_observation(model_dir, tmp_path, capsys):
    import imageio.v3 as iio

    import envs

    out = tmp_path / "plan.mp4"
    assert main(["plan", "place the red block in the blue bowl", "--seed", "3",
                 "--model", str(model_dir), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".gif").is_file()
    frames = iio.imread(out)  # the gif merges identical frames; the mp4 keeps each one
    assert len(frames) == 7  # (4 - 1) * 2 + 1 planned frames

    from unipi.model_dir import load_planner

    env = envs.make_env("place", image_size=(16, 16))
    obs, _ = env.reset(seed=3, options={"instruction": "place the red block in the blue bowl"})
    plan = load_planner(model_dir)(obs["image"], "place the red block in the blue bowl",
                                   num_inference_steps=2).videos[0]
    np.testing.assert_array_equal(plan[0], obs["image"])


def test_eval_writes_info_and_videos(model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--episodes", "1", "--model", str(model_dir), "--out", str(out),
                 "--video-episodes", "1"]) == 0
    info = json.loads((out / "eval_info.json").read_text())
    assert len(info["episodes"]) == 4
    assert {(c["family"], c["split"]) for c in info["summary"]["cells"]} == {
        ("place", "seen"), ("place", "novel"), ("relation", "seen"), ("relation", "novel")}
    assert all((out / v).is_file() for v in info["videos"]) and len(info["videos"]) == 4
    assert "| unipi | place | seen |" in capsys.readouterr().out


def test_eval_results_do_not_depend_on_workers(model_dir, tmp_path):
    runs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["eval", "--env", "place", "--episodes", "2", "--model", str(model_dir),
                     "--out", str(out), "--video-episodes", "0",
                     "--workers", str(workers)]) == 0
        eps = json.loads((out / "eval_info.json").read_text())["episodes"]
        runs.append([(e["seed"], e["instruction"], e["success"], e["steps"]) for e in eps])
    assert runs[0] == runs[1]


def test_eval_takes_agent_overrides(model_dir, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--env", "place", "--split", "seen", "--episodes", "1", "--model",
                 str(model_dir), "--out", str(out), "--video-episodes", "0",
                 "agent.replan_every=2", "agent.max_steps=6"]) == 0
    info = json.loads((out / "eval_info.json").read_text())
    overrides = info["summary"]["request"]["agent_overrides"]
    assert overrides == ["agent.replan_every=2", "agent.max_steps=6"]
    episode = info["episodes"][0]
    assert episode["steps"] <= 6 and episode["num_plans"] >= 3  # a plan every 2 steps


@pytest.mark.parametrize("argv, message", [
    (["agent.replan_every=0"], "agent.replan_every=0"),
    (["planner.train.lr=1"], "agent.* settings only"),
    (["--expert", "agent.replan_every=2"], "not to --expert"),
])
def test_bad_eval_overrides_are_one_line(model_dir, tmp_path, capsys, argv, message):
    assert main(["eval", "--env", "place", "--episodes", "1", "--model", str(model_dir),
                 "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_folder_is_one_line(tmp_path, capsys):
    assert main(["plan", "place the red block in the blue bowl",
                 "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "config.json" in err


def test_export_writes_a_model_card_that_takes_results(model_dir, tmp_path):
    facts = json.loads((model_dir / "training.json").read_text())
    assert set(facts["stages"]) == {"base", "tsr", "idm"}
    assert facts["stages"]["base"]["step"] == 2 and facts["stages"]["base"]["wall_seconds"] > 0
    assert facts["data"]["episodes"] == 4
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "## Training" in card and "CPU cores" in card

    out = tmp_path / "eval"
    assert main(["eval", "--env", "place", "--split", "seen", "--episodes", "1", "--model",
                 str(model_dir), "--out", str(out), "--video-episodes", "0"]) == 0
    assert main(["card", "--model", str(model_dir), "--eval", str(out / "eval_info.json")]) == 0
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "## Closed-loop success" in card and "| unipi | place | seen |" in card
