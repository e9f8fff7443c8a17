"""Closed-loop agent and evaluation harness, with fake planners and tiny IDMs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inverse_dynamics.model import InverseDynamicsModel
from unipi.agent import ExpertAgent, UniPiAgent
from unipi.agent_config import AgentConfig
from unipi.config import ConfigError
from unipi.evaluate import (
    FAMILIES,
    SPLITS,
    cell_seed,
    evaluate,
    format_table,
    video_frames,
    wilson_interval,
)
from unipi.planner.config import PlannerConfig
from unipi.seeds import EVAL_SEED_START, train_seed

CHUNK = 2


class NoisyPlanner:
    """Returns the input image, then ``frames - 1`` noisy copies drawn from ``generator``."""

    frame_spacing = CHUNK

    def __init__(self, frames: int = 3) -> None:
        self.frames, self.calls = frames, 0

    def __call__(self, image, instruction, num_inference_steps=20, guidance_scale=2.0,
                 generator=None):
        assert image.ndim == 4 and len(instruction) == image.shape[0]
        self.calls += 1
        video = np.repeat(image[:, None], self.frames, axis=1).astype(np.int16)
        noise = torch.randint(-20, 21, video[:, 1:].shape, generator=generator).numpy()
        video[:, 1:] += noise
        return SimpleNamespace(videos=np.clip(video, 0, 255).astype(np.uint8))


class ScriptedIDM:
    """Stands in for the IDM: the same action for every step of every pair."""

    config = SimpleNamespace(chunk=CHUNK)

    def __init__(self, action) -> None:
        self.action = np.asarray(action, np.float32)

    def predict(self, a, b):
        return np.tile(self.action, (len(a), CHUNK, 1))


class CountingEnv:
    """A minimal env: the state moves by the action's xyz; success after ``succeed_at``."""

    spec = SimpleNamespace(max_episode_steps=30)

    def __init__(self, succeed_at: int | None = None) -> None:
        self.succeed_at = succeed_at

    def _obs(self):
        image = np.full((8, 8, 3), self.t % 256, np.uint8)
        return {"image": image, "state": self.state.copy()}

    def reset(self, seed=None, options=None):
        self.t, self.state = 0, np.zeros(4, np.float32)
        return self._obs(), {"instruction": "place the red block in the blue bowl",
                             "split": (options or {}).get("split", "seen"), "success": False}

    def step(self, action):
        self.t += 1
        self.state[:3] += action[:3]
        success = self.succeed_at is not None and self.t >= self.succeed_at
        return self._obs(), float(success), False, False, {"success": success}

    def render(self):
        return np.zeros((128, 128, 3), np.uint8)


def tiny_idm() -> InverseDynamicsModel:
    torch.manual_seed(0)
    return InverseDynamicsModel(chunk=CHUNK, channels=4, hidden=8)


def test_agent_config_validation():
    with pytest.raises(ConfigError, match="agent.replan_every"):
        AgentConfig(replan_every=0)


def test_replans_every_n_steps_and_stops_at_success():
    planner = NoisyPlanner(frames=5)  # 4 pairs -> 8 actions per plan
    agent = UniPiAgent(planner, ScriptedIDM([1, 0, 0, 1]), AgentConfig(replan_every=3))
    result = agent.run_episode(CountingEnv(succeed_at=7), seed=1)
    assert result.success and result.steps == 7 and result.first_success_step == 7
    assert result.num_plans == 3 == planner.calls  # steps 0, 3, 6
    assert [j for j, _ in result.plan_index] == [0, 0, 0, 1, 1, 1, 2]
    assert result.frames.shape == (8, 8, 8, 3)
    assert len(result.plans) == 3 and result.plans[0].shape == (5, 8, 8, 3)


def test_steps_after_success():
    agent = UniPiAgent(NoisyPlanner(), ScriptedIDM([1, 0, 0, 1]),
                       AgentConfig(steps_after_success=2))
    assert agent.run_episode(CountingEnv(succeed_at=4), seed=1).steps == 6


def test_stalled_arm_triggers_replan():
    cfg = AgentConfig(replan_every=16, stall_window=2)
    planner = NoisyPlanner(frames=9)  # 16 actions per plan
    agent = UniPiAgent(planner, ScriptedIDM([0, 0, 0, 1]), cfg)
    result = agent.run_episode(CountingEnv(), seed=1, max_steps=9)
    assert result.steps == 9
    assert result.num_plans == 5 and result.replans_on_stall == 4  # after every 2 steps


def test_open_loop_executes_one_plan_then_stops():
    cfg = AgentConfig(open_loop=True, replan_every=1)
    agent = UniPiAgent(NoisyPlanner(frames=4), ScriptedIDM([0, 0, 0, 1]), cfg)
    result = agent.run_episode(CountingEnv(), seed=1)
    assert result.num_plans == 1 and result.steps == 3 * CHUNK and not result.success


def test_spacing_mismatch_is_refused():
    planner = NoisyPlanner()
    planner.frame_spacing = 4
    with pytest.raises(ValueError, match="chunk=2"):
        UniPiAgent(planner, ScriptedIDM([0, 0, 0, 0]))
    pipeline_like = SimpleNamespace(planner=PlannerConfig(frame_stride=8, tsr_factor=2))
    with pytest.raises(ValueError, match="4 env steps apart"):
        UniPiAgent(pipeline_like, ScriptedIDM([0, 0, 0, 0]))


def test_same_seed_same_episode_in_real_env():
    envs = pytest.importorskip("envs", reason="envs (the tabletop) is not importable yet")
    env = envs.make_env("place", render_mode="rgb_array", image_size=(32, 32))
    agent = UniPiAgent(NoisyPlanner(), tiny_idm(), AgentConfig(replan_every=4))
    seed = cell_seed("place", "seen", 0)
    runs = [agent.run_episode(env, seed, split="seen", max_steps=10, render=True)
            for _ in range(2)]
    other = agent.run_episode(env, seed + 1, split="seen", max_steps=10)
    env.close()

    a, b = runs
    assert a.steps == 10 and a.frames.shape == (11, 32, 32, 3)
    assert a.renders.shape == (11, 128, 128, 3)
    assert a.instruction == b.instruction and a.split == "seen"
    np.testing.assert_array_equal(a.frames, b.frames)
    for pa, pb in zip(a.plans, b.plans):
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a.plans[0], other.plans[0])


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.23659, abs=1e-4), pytest.approx(0.76341, abs=1e-4))
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.72247, abs=1e-4) and hi == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_eval_seeds_disjoint_from_training_and_across_cells():
    seeds = [cell_seed(f, s, i) for f in FAMILIES for s in SPLITS for i in range(500)]
    assert len(set(seeds)) == len(seeds)
    assert min(seeds) >= EVAL_SEED_START > train_seed(EVAL_SEED_START - 1)
    with pytest.raises(ValueError):
        train_seed(EVAL_SEED_START)


def test_video_frames_pair_plan_with_execution():
    agent = UniPiAgent(NoisyPlanner(frames=3), ScriptedIDM([1, 0, 0, 1]),
                       AgentConfig(replan_every=4))
    result = agent.run_episode(CountingEnv(), seed=3, max_steps=6)
    video = video_frames(result, spacing=CHUNK)
    assert video.shape == (7, 128, 2 * 128 + 4, 3)
    np.testing.assert_array_equal(video[3, ::16, 132::16], result.frames[3])
    np.testing.assert_array_equal(video[3, ::16, :128:16], result.plans[0][2])


def test_evaluate_writes_eval_info(tmp_path):
    pytest.importorskip("envs", reason="envs (the tabletop) is not importable yet")
    agent = UniPiAgent(NoisyPlanner(), tiny_idm(), AgentConfig(max_steps=4))
    info = evaluate(agent, families=("place",), episodes=2, out_dir=tmp_path, video_episodes=1)

    saved = json.loads((tmp_path / "eval_info.json").read_text())
    assert saved["summary"] == info["summary"]
    cells = saved["summary"]["cells"]
    assert [(c["family"], c["split"]) for c in cells] == [("place", "seen"), ("place", "novel")]
    for c in cells:
        assert c["episodes"] == 2
        assert tuple(c["ci95"]) == pytest.approx(wilson_interval(c["successes"], 2))
    episodes = saved["episodes"]
    assert len({e["seed"] for e in episodes}) == 4
    assert {e["split"] for e in episodes} == {"seen", "novel"}
    assert all(e["steps"] <= 4 and "instruction" in e and "wall_time" in e for e in episodes)
    assert len(saved["videos"]) == 2 and all((tmp_path / v).is_file() for v in saved["videos"])
    assert "| place | novel |" in format_table(saved["summary"])


def test_expert_through_the_same_harness(tmp_path):
    pytest.importorskip("envs.expert", reason="envs.expert is not importable yet")
    info = evaluate(ExpertAgent(), families=("place",), splits=("seen",), episodes=3,
                    out_dir=tmp_path, video_episodes=0, label="expert")
    cell = info["summary"]["cells"][0]
    assert info["summary"]["agent"] == "expert"
    assert cell["success_rate"] == 1.0, info["episodes"]


class RecordingIDM(ScriptedIDM):
    """Remembers the first frame of every pair it is asked about."""

    def __init__(self, action) -> None:
        super().__init__(action)
        self.first_frames = []

    def predict(self, a, b):
        if a.ndim == 3:  # one pair
            self.first_frames.append(a.copy())
            return np.tile(self.action, (CHUNK, 1))
        self.first_frames.extend(a.copy())
        return np.tile(self.action, (len(a), CHUNK, 1))


def test_track_plan_reads_chunks_from_the_observation():
    """After the first chunk, the IDM sees the frame the env produced, not a planned one."""
    idm = RecordingIDM([0.1, 0, 0, 0])
    cfg = AgentConfig(replan_every=6, track_plan=True, stall_window=0)
    agent = UniPiAgent(NoisyPlanner(frames=4), idm, cfg)
    result = agent.run_episode(CountingEnv(), seed=0, max_steps=6)
    assert result.steps == 6 and result.num_plans == 1
    # 3 batched pairs at planning, then one pair per later chunk, taken at t = 2 and 4
    tracked = idm.first_frames[3:]
    assert [int(f[0, 0, 0]) for f in tracked] == [2, 4]
