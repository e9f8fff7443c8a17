"""Behaviour modulation at sampling time: goal images, classifier guidance, refusals,
the frame classifier's training, and the CLI options, with tiny models."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from test_planner import SIZE, images, make_pipe, plan  # noqa: E402

from unipi.planner.constraints import output_from_x0, predicted_x0  # noqa: E402
from unipi.planner.testing import save_tiny_t5  # noqa: E402
from unipi.planner.text import TextEncoder  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores are shared with other work: one thread is faster than two here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    return TextEncoder("t5", str(save_tiny_t5(tmp_path_factory.mktemp("t5"))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data, model folder, classifier run) trained two steps each."""
    from unipi.classifier.testing import tiny_folders

    return tiny_folders(tmp_path_factory.mktemp("constraints"))


def linear_classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2)).eval()


# ------------------------------------------------------------------------ goal image
@pytest.mark.parametrize("overrides", [
    [], ["planner.diffusion.residual=true"], ["planner.hierarchy=false"],
    ["planner.hierarchy=false", "planner.diffusion.residual=true"],
    ["planner.conditioning=none"], ["planner.diffusion.prediction_type=epsilon"],
])
def test_pinned_last_frame_is_the_goal_exactly(text_encoder, overrides):
    pipe, image, goal = make_pipe(text_encoder, overrides), images(), images(seed=7)
    free = plan(pipe, image).videos
    out = plan(pipe, image, goal_image=goal, return_keyframes=True)
    np.testing.assert_array_equal(out.videos[:, -1], goal)
    np.testing.assert_array_equal(out.keyframes[:, -1], goal)
    np.testing.assert_array_equal(out.videos[:, 0], image)  # the observation stays
    assert (out.videos[:, 1:-1] != free[:, 1:-1]).any()  # and the frames between change


def test_reconstruction_guidance_keeps_the_pin_and_changes_the_rest(text_encoder):
    pipe, image, goal = make_pipe(text_encoder, ["planner.diffusion.residual=true"]), \
        images(), images(seed=7)
    pinned = plan(pipe, image, goal_image=goal).videos
    guided = plan(pipe, image, goal_image=goal, goal_guidance=5.0).videos
    np.testing.assert_array_equal(guided[:, -1], goal)
    assert (guided[:, 1:-1] != pinned[:, 1:-1]).any()


def test_one_goal_serves_a_batch(text_encoder):
    pipe, goal = make_pipe(text_encoder), images(1, seed=3)[0]
    out = plan(pipe, images(), goal_image=goal).videos
    assert (out[:, -1] == goal).all()


# ------------------------------------------------------------------ classifier guidance
@pytest.mark.parametrize("overrides", [[], ["planner.diffusion.residual=true"],
                                       ["planner.diffusion.prediction_type=epsilon"]])
def test_guide_weight_zero_is_the_unconstrained_plan(text_encoder, overrides):
    pipe, image, clf = make_pipe(text_encoder, overrides), images(), linear_classifier()
    free = plan(pipe, image).videos
    zero = plan(pipe, image, guide=clf, guide_weight=0.0).videos
    np.testing.assert_array_equal(zero, free)  # bit for bit, same seed
    assert (plan(pipe, image, guide=clf, guide_weight=3.0).videos != free).any()


def test_guidance_raises_the_target_log_probability(text_encoder):
    pipe, image, clf = make_pipe(text_encoder), images(4), linear_classifier()
    texts = ["move the square left"] * 4

    def logp(videos, target):
        x = torch.from_numpy(videos[:, -1]).float().permute(0, 3, 1, 2) / 127.5 - 1
        return torch.log_softmax(clf(x), -1)[:, target].mean().item()

    for target in (0, 1):
        runs = [pipe(image, texts, num_inference_steps=4, guide=clf, guide_weight=w,
                     guide_target=target, generator=torch.Generator().manual_seed(0)).videos
                for w in (0.0, 0.5)]
        assert logp(runs[1], target) > logp(runs[0], target)


@pytest.mark.parametrize("ptype", ["v_prediction", "epsilon", "sample"])
def test_x0_and_model_output_are_inverse(ptype):
    g = torch.Generator().manual_seed(0)
    x_t, out = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 8, 8, generator=g)
    abar = torch.tensor(0.3)
    x0 = predicted_x0(out, x_t, abar, ptype)
    torch.testing.assert_close(output_from_x0(x0, x_t, abar, ptype), out, rtol=1e-4,
                               atol=1e-5)
    if ptype == "v_prediction":  # x0 = sqrt(abar) x_t - sqrt(1 - abar) v
        torch.testing.assert_close(x0, abar.sqrt() * x_t - (1 - abar).sqrt() * out)


# ----------------------------------------------------------------------------- refusals
class NoGradClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3 * SIZE * SIZE, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.lin(x.flatten(1))


class DetachedClassifier(NoGradClassifier):
    def forward(self, x):
        return self.lin(x.detach().flatten(1))  # has a graph, but not to its input


class HardClassifier(NoGradClassifier):
    def forward(self, x):
        return nn.functional.one_hot(self.lin(x.flatten(1)).argmax(-1), 2).float()


@pytest.mark.parametrize("kwargs, match", [
    (dict(goal_image=np.zeros((SIZE + 1, SIZE, 3), np.uint8)), r"goal_image.*16, 16"),
    (dict(goal_image=np.zeros((SIZE, SIZE, 3), np.float32)), r"goal_image.*uint8"),
    (dict(goal_image=np.zeros((3, SIZE, SIZE, 3), np.uint8)), r"3 goals for 2"),
    (dict(goal_guidance=1.0), r"goal_guidance=1.0 needs a goal"),
    (dict(guide_weight=2.0), r"guide_weight=2.0 needs a classifier"),
    (dict(guide=NoGradClassifier(), guide_weight=1.0), r"no gradient.*differentiable"),
    (dict(guide=DetachedClassifier(), guide_weight=1.0), r"does not reach the input"),
    (dict(guide=HardClassifier(), guide_weight=1.0), r"differentiable"),
    (dict(guide=nn.Sequential(nn.Flatten(), nn.Linear(10, 2)), guide_weight=1.0),
     r"cannot read planner frames \(1, 3, 16, 16\)"),
    (dict(guide=linear_classifier(), guide_weight=1.0, guide_target=5), r"guide_target=5"),
    (dict(guide=linear_classifier(), guide_weight=1.0, guide_target="left"),
     r"guide_target='left'"),
])
def test_constraints_the_model_cannot_use_are_refused(text_encoder, kwargs, match):
    pipe = make_pipe(text_encoder)
    with pytest.raises(ValueError, match=match):
        plan(pipe, images(), **kwargs)


def test_agent_refuses_guidance_without_a_classifier():
    from unipi.agent import UniPiAgent
    from unipi.agent_config import AgentConfig

    class Idm:
        class config:
            chunk = 1

    with pytest.raises(ValueError, match="guide_weight=1.0 needs a classifier"):
        UniPiAgent(lambda *a, **k: None, Idm(), AgentConfig(guide_weight=1.0))


def test_bad_classifier_settings_name_the_key():
    from unipi.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"classifier\.target='colourful'"):
        load_config(None, ["classifier.target=colourful"])
    with pytest.raises(ConfigError, match=r"classifier\.colour='pink'"):
        load_config(None, ["classifier.colour=pink"])


# ----------------------------------------------------------------------------- classifier
def _cfg(tiny, *extra):
    from unipi.classifier.testing import tiny_overrides_for
    from unipi.config import load_config

    data, model, _ = tiny
    return load_config("configs/tabletop.yaml", tiny_overrides_for(model.parent, data)
                       + list(extra))


def test_labels_come_from_replaying_the_episodes(tiny):
    import envs
    from unipi.classifier.labels import TARGETS, episode_labels, replay_episode
    from unipi.data import EpisodeStore
    from unipi.data.format import DatasetFormatError

    store = EpisodeStore(tiny[0])
    ep = store.episodes[0]
    env = envs.make_env(ep.record.family, image_size=store.image_size)
    sims = replay_episode(env, ep)
    assert len(sims) == ep.record.length + 1
    colour = env.unwrapped.task.block
    labels = episode_labels(ep, TARGETS["block_side"], colour, {ep.record.family: env})
    expect = [int(s["blocks"][colour][0] >= 0) for s in sims]
    assert labels.tolist() == expect
    ep.states = ep.states + 0.01  # a recording the env does not reproduce
    with pytest.raises(DatasetFormatError, match=f"seed={ep.record.seed}.*does not reproduce"):
        replay_episode(env, ep)
    env.close()


def test_classifier_trains_saves_loads(tiny, tmp_path):
    from unipi.classifier import load_classifier
    from unipi.classifier.train import train_classifier

    cfg = _cfg(tiny, "classifier.target=gripper_side")
    metrics = train_classifier(cfg, tmp_path, max_steps=2)
    assert metrics["step"] == 2 and metrics["classes"] == ["left", "right"]
    assert 0 <= metrics["val"]["accuracy"] <= 1 and metrics["val"]["num_frames"] > 0
    saved = json.loads((tmp_path / "classifier_metrics.json").read_text())
    assert saved["val"]["accuracy"] == metrics["val"]["accuracy"]
    clf = load_classifier(tmp_path)  # the run folder or its classifier/ folder
    assert clf.config.target == "gripper_side" and clf.config.default_class == "left"
    probs = clf.predict(np.zeros((3, SIZE, SIZE, 3), np.uint8))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a classifier folder"):
        load_classifier(tmp_path / "checkpoint")


def test_classifier_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    from safetensors.torch import load_file

    from unipi.classifier.train import train_classifier

    cfg = _cfg(tiny, "classifier.target=gripper_side", "classifier.steps=4")
    train_classifier(cfg, tmp_path / "a", max_steps=2)
    train_classifier(cfg, tmp_path / "a", resume=True)
    train_classifier(cfg, tmp_path / "b")
    a, b = (load_file(tmp_path / r / "checkpoint" / "model.safetensors") for r in "ab")
    assert json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())["step"] == 4
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    other = _cfg(tiny, "classifier.target=block_side", "classifier.steps=4")
    with pytest.raises(ValueError, match="other classifier settings"):
        train_classifier(other, tmp_path / "a", resume=True)


# ------------------------------------------------------------------------------- CLI
def test_cli_plan_with_goal_and_guide(tiny, tmp_path, capsys):
    from unipi.cli import main

    _, model, clf = tiny
    out = tmp_path / "plan.mp4"
    assert main(["plan", "place the red block in the blue bowl", "--seed", "3", "--model",
                 str(model), "--out", str(out), "--goal-from-env", "--guide", str(clf),
                 "--guide-weight", "2", "--guide-target", "right"]) == 0
    assert out.is_file() and "plan | goal" in capsys.readouterr().out


def test_cli_goal_image_file(tiny, tmp_path):
    import imageio.v3 as iio

    import envs
    from unipi.cli import main
    from unipi.goal import expert_goal

    env = envs.make_env("place", image_size=(SIZE, SIZE))
    goal = expert_goal(env, 3, "place the red block in the blue bowl")
    env.close()
    assert goal.image.shape == (SIZE, SIZE, 3) and goal.expert_success
    iio.imwrite(tmp_path / "goal.png", goal.image)
    assert main(["plan", "place the red block in the blue bowl", "--seed", "3", "--model",
                 str(tiny[1]), "--out", str(tmp_path / "p.mp4"), "--goal-image",
                 str(tmp_path / "goal.png"), "--goal-guidance", "1"]) == 0


@pytest.mark.parametrize("extra, match", [
    (["--goal-image", "{big}"], "is 20x20 pixels; this model plans at 16x16"),
    (["--goal-image", "{big}", "--goal-from-env"], "pass one"),
    (["--guide-weight", "2"], "needs a classifier: --guide CLASSIFIER_DIR"),
    (["--guide", "{tmp}", "--guide-weight", "2"], "not a classifier folder"),
    (["--goal-guidance", "2"], "needs --goal-image or --goal-from-env"),
])
def test_cli_refusals_are_one_line(tiny, tmp_path, capsys, extra, match):
    import imageio.v3 as iio

    from unipi.cli import main

    iio.imwrite(tmp_path / "big.png", np.zeros((20, 20, 3), np.uint8))
    extra = [e.format(big=tmp_path / "big.png", tmp=tmp_path) for e in extra]
    assert main(["plan", "place the red block in the blue bowl", "--model", str(tiny[1]),
                 "--out", str(tmp_path / "p.mp4"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- agent
def test_agent_pins_the_same_goal_at_every_replan(tiny):
    import envs
    from unipi.agent import UniPiAgent
    from unipi.classifier import load_classifier
    from unipi.model_dir import load_idm, load_model_config, load_planner

    _, model, clf = tiny
    pipe, calls = load_planner(model), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return pipe(*args, **kwargs)

    cfg = load_model_config(model).agent
    cfg.goal_from_env, cfg.guide_weight, cfg.max_steps, cfg.stall_window = True, 1.0, 9, 0
    agent = UniPiAgent(spy, load_idm(model), cfg, guide=load_classifier(clf))
    env = envs.make_env("place", image_size=(SIZE, SIZE))
    result = agent.run_episode(env, 10_000_001, instruction="place the red block in the "
                               "blue bowl")
    env.close()
    assert result.num_plans == len(calls) >= 2
    goals = [c["goal_image"] for c in calls]
    assert all((g == goals[0]).all() for g in goals) and calls[0]["guide_weight"] == 1.0
    assert all((p[-1] == goals[0][0]).all() for p in result.plans)


@pytest.mark.slow
def test_cli_eval_with_goal_and_guide(tiny, tmp_path):
    from unipi.cli import main

    _, model, clf = tiny
    out = tmp_path / "eval"
    assert main(["eval", "--env", "place", "--split", "seen", "--episodes", "1", "--model",
                 str(model), "--out", str(out), "--video-episodes", "0", "--goal-from-env",
                 "--guide", str(clf), "--guide-weight", "1"]) == 0
    info = json.loads((out / "eval_info.json").read_text())
    assert info["summary"]["request"]["goal_from_env"] and len(info["episodes"]) == 1


@pytest.mark.slow
def test_benchmark_tiny_runs(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "benchmarks/constraints.py", "--tiny", "--out",
                           str(tmp_path), "--guide-cfg-scale", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "constraints.json").read_text())
    assert report["goal"]["goal pinned"]["last_mse"] == 0.0
    assert report["guide_cfg_scale"] == 0.0 and "w=2 -> left" in report["guide"]
    assert (tmp_path / "goal_side_by_side.mp4").is_file()
