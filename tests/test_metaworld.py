"""Meta-World under AVDC's protocol: the env, its cameras, the scripted expert, collection
into the dataset format, and the protocol end to end with tiny models."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("metaworld")

import mujoco  # noqa: E402

from envs.metaworld import (  # noqa: E402
    CAMERAS,
    TASKS,
    FastRenderer,
    camera_up,
    make_metaworld_env,
    make_raw_env,
    project,
)
from envs.metaworld_expert import run_expert_episode  # noqa: E402
from unipi.cli import main  # noqa: E402

# Markers in Meta-World's world frame (table centre near (0, 0.6)): one above the other.
MARKERS = {"low": ((0.0, 0.6, 0.05), (0, 0, 1)), "high": ((0.0, 0.6, 0.35), (1, 0, 0)),
           "side": ((0.25, 0.6, 0.05), (0, 1, 0))}


def _render_markers(model, data, camera, size):
    """(H, W, 3) frame of only the MARKERS (scene geoms dropped), as bright spheres."""
    renderer = FastRenderer(model, size)
    r = renderer.renderer
    r.update_scene(data, camera=camera)
    r.scene.ngeom = 0
    for pos, rgb in MARKERS.values():
        geom = r.scene.geoms[r.scene.ngeom]
        mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_SPHERE, np.array([0.03, 0, 0]),
                            np.array(pos, dtype=float), np.eye(3).ravel(),
                            np.array([*rgb, 1.0], dtype=np.float32))
        geom.emission = 1.0
        r.scene.ngeom += 1
    image = r.render()
    renderer.close()
    return image


def _centroids(image):
    """(u, v) pixel centre of each marker, found by its dominant colour channel."""
    out = {}
    for name, (_, rgb) in MARKERS.items():
        on = np.array(rgb, dtype=bool)
        mask = np.all(image[..., on] > 150, axis=-1) & np.all(image[..., ~on] < 100, axis=-1)
        v, u = np.nonzero(mask)
        assert len(u) > 0, f"marker {name} not visible"
        out[name] = np.array([u.mean() + 0.5, v.mean() + 0.5])
    return out


@pytest.mark.parametrize("camera", CAMERAS)
def test_meta_worlds_corner_cameras_come_out_upside_down(camera):
    raw = make_raw_env("door-open")
    mujoco.mj_forward(raw.model, raw.data)
    assert camera_up(raw.model, raw.data, camera)[2] < 0
    found = _centroids(_render_markers(raw.model, raw.data, camera, (64, 64)))
    assert found["high"][1] > found["low"][1]  # the higher marker is lower in the frame
    raw.close()


@pytest.mark.parametrize("camera", CAMERAS)
def test_world_up_is_image_up_and_frames_match_the_projection(camera):
    env = make_metaworld_env("door-open", camera, image_size=(64, 64)).unwrapped
    env.reset(seed=0)
    assert env.rolled[camera] and camera_up(env.model, env.data, camera)[2] > 0
    found = _centroids(_render_markers(env.model, env.data, camera, (64, 64)))
    for name, (pos, _) in MARKERS.items():
        expected = project(env.model, env.data, camera, np.array([pos]), (64, 64))[0]
        assert np.abs(found[name] - expected).max() < 1.5, (name, found[name], expected)
    assert found["high"][1] < found["low"][1] - 5  # world up is image up
    env.close()


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum)")
def test_env_checker_info_and_errors():
    from gymnasium.utils.env_checker import check_env

    env = make_metaworld_env("door-open", "corner2", image_size=(16, 16),
                             render_mode="rgb_array", render_size=(24, 24))
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"instruction": "Open the door."})
    assert obs["image"].shape == (16, 16, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert info == {"instruction": "open the door", "task": "door-open", "split": "seen",
                    "camera": "corner2", "success": False, "shaped_reward": 0.0}
    assert env.render().shape == (24, 24, 3)
    assert env.spec.max_episode_steps == 500
    with pytest.raises(ValueError, match="close the door"):
        env.reset(seed=0, options={"instruction": "close the door"})
    with pytest.raises(ValueError, match="split='novel'"):
        env.reset(seed=0, options={"split": "novel"})
    env.close()
    with pytest.raises(ValueError, match="corner4.*corner, corner2, corner3"):
        make_metaworld_env("door-open", "corner4")
    with pytest.raises(ValueError, match="door.*door-open"):
        make_metaworld_env("door")


class _StillPlanner:
    """Plans of 3 frames, all the observed image; counts its calls."""

    frame_spacing = 1

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image, instruction, **kwargs):
        self.calls += 1
        return SimpleNamespace(videos=np.repeat(image[:, None], 3, axis=1))


class _SideIDM:
    """One action per frame pair, a small move in x; counts unbatched (tracking) calls."""

    config = SimpleNamespace(chunk=1)

    def __init__(self) -> None:
        self.single_calls = 0

    def predict(self, a, b):
        action = np.array([0.3, 0.0, 0.0, -1.0], dtype=np.float32)
        if a.ndim == 3:
            self.single_calls += 1
            return action[None]
        return np.tile(action, (len(a), 1, 1))


def test_max_plans_caps_plans_then_steers_toward_the_last_frame():
    from unipi.agent import UniPiAgent
    from unipi.agent_config import AgentConfig
    from unipi.config import ConfigError

    env = make_metaworld_env("door-open", "corner", image_size=(16, 16))
    planner, idm = _StillPlanner(), _SideIDM()
    capped = AgentConfig(replan_every=2, stall_window=0, max_plans=2)
    result = UniPiAgent(planner, idm, capped).run_episode(env, seed=0, max_steps=10)
    assert result.num_plans == planner.calls == 2 and result.steps == 10
    assert idm.single_calls == 6  # steps 5..10, each toward the last planned frame
    free = AgentConfig(replan_every=2, stall_window=0)
    result = UniPiAgent(_StillPlanner(), _SideIDM(), free).run_episode(env, seed=0, max_steps=10)
    assert result.num_plans == 5
    env.close()
    with pytest.raises(ConfigError, match="agent.max_plans=-1"):
        AgentConfig(max_plans=-1)


def _rollout(env, seed, steps=5):
    obs, _ = env.reset(seed=seed)
    frames = [obs["image"]]
    for t in range(steps):
        obs, *_ = env.step(np.array([0.5, -0.5, 0.2 * t, 1.0], dtype=np.float32))
        frames.append(obs["image"])
    return np.stack(frames)


def test_same_seed_same_frames():
    env = make_metaworld_env("assembly", "corner3", image_size=(32, 32))
    first, other, again = _rollout(env, 11), _rollout(env, 12), _rollout(env, 11)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0])  # the ring and peg moved
    fresh = make_metaworld_env("assembly", "corner3", image_size=(32, 32))
    np.testing.assert_array_equal(_rollout(fresh, 11), first)
    env.close()
    fresh.close()


@pytest.mark.parametrize("task", ["handle-press", "button-press-topdown"])
def test_scripted_policy_succeeds_through_the_eval_harness(task, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--env", "metaworld", "--expert", "--tasks", task, "--cameras",
                 "corner", "--episodes", "2", "--out", str(out), "--video-episodes", "0",
                 "--max-steps", "150"]) == 0
    info = json.loads((out / "eval_info.json").read_text())
    assert [e["success"] for e in info["episodes"]] == [True, True]
    assert len({e["seed"] for e in info["episodes"]}) == 2
    assert min(e["seed"] for e in info["episodes"]) >= 10_000_000  # evaluation range
    printed = capsys.readouterr().out
    assert f"| {task} | 100.0 % |" in printed and "| overall |" in printed


@pytest.mark.parametrize("flag", [["--goal-from-env"], ["--guide", "G"],
                                  ["--guide-weight", "2"], ["--fvd-weights", "i3d.pt"]])
def test_tabletop_only_eval_options_are_refused(flag, tmp_path, capsys):
    assert main(["eval", "--env", "metaworld", "--expert", "--tasks", "handle-press",
                 "--out", str(tmp_path), *flag]) == 2
    assert flag[0] in capsys.readouterr().err


def test_collect_round_trip_and_resume(tmp_path):
    from unipi.data import ClipDataset, EpisodeStore
    from unipi.data.collect_metaworld import decode_seed

    out = tmp_path / "data"
    args = ["collect", "--env", "metaworld", "--tasks", "handle-press", "--cameras",
            "corner,corner2", "--image-size", "16x16", "--episode-steps", "48", "--out",
            str(out)]
    assert main([*args, "--episodes-per-task", "2"]) == 0
    store = EpisodeStore(out)
    assert len(store) == 2 and store.instructions == [TASKS["handle-press"]]
    cams = sorted(decode_seed(e.record.seed)[1] for e in store.episodes)
    assert cams == ["corner", "corner2"]
    ep = store.episodes[0]
    assert ep.record.family == "metaworld" and ep.record.labelled and ep.record.length == 48
    assert ep.frames.shape == (49, 16, 16, 3) and ep.actions.shape == (48, 4)
    assert np.abs(ep.actions).max() <= 1.0

    # the stored episode is what the env and the expert make from its seed
    task, camera, _ = decode_seed(ep.record.seed)
    again = run_expert_episode(make_metaworld_env(task, camera, image_size=(16, 16)),
                               ep.record.seed, max_steps=48)
    np.testing.assert_array_equal(again["frames"], ep.frames)

    clips = ClipDataset(out, num_frames=8, stride=16, families=["metaworld"])
    assert clips[0]["video"].shape == (8, 16, 16, 3)
    assert main([*args, "--episodes-per-task", "2"]) == 0  # resumed: nothing to do
    assert len(list((out / "episodes").glob("*.parquet"))) == 2
    assert main([*args[:-2], "--out", str(out), "--episodes-per-task", "2",
                 "--cameras", "corner"]) == 2  # other settings are refused


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unipi.planner.testing import save_tiny_t5, tiny_overrides

    root = tmp_path_factory.mktemp("mw_e2e")
    data, run = root / "data", root / "run"
    assert main(["collect", "--env", "metaworld", "--tasks", "handle-press", "--cameras",
                 "corner", "--episodes-per-task", "2", "--image-size", "16x16",
                 "--episode-steps", "48", "--out", str(data)]) == 0
    t5 = save_tiny_t5(root / "t5")
    overrides = tiny_overrides(16) + [
        f"data.root={data}", "text_encoder.type=t5", f"text_encoder.name_or_path={t5}",
        "planner.train.checkpoint_every=1", "idm.steps=2", "idm.warmup_steps=0",
        "idm.checkpoint_every=1", "idm.batch_size=8", "idm.channels=8", "idm.hidden=16",
        "agent.num_inference_steps=2", "agent.replan_every=4",
    ]
    cfg = ["--config", "configs/metaworld.yaml", "--out", str(run), "--max-steps", "2"]
    for stage in ("base", "tsr"):
        assert main(["train", "planner", "--stage", stage, *cfg, *overrides]) == 0
    assert main(["train", "idm", *cfg, *overrides]) == 0
    out = root / "model"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    return out


def test_protocol_runs_end_to_end(model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--env", "metaworld", "--model", str(model_dir), "--tasks",
                 "handle-press", "--cameras", "corner", "--episodes", "1", "--max-steps",
                 "16", "--max-replans", "1", "--out", str(out), "--video-episodes", "1"]) == 0
    info = json.loads((out / "eval_info.json").read_text())
    (episode,) = info["episodes"]
    assert episode["task"] == "handle-press" and episode["camera"] == "corner"
    assert 1 <= episode["num_plans"] <= 2  # the first plan and 1 re-plan
    assert episode["steps"] == 16 or episode["success"]  # then on toward the last frame
    assert all((out / v).is_file() for v in info["videos"]) and len(info["videos"]) == 1
    budget = info["summary"]["budget"]
    assert budget["data"]["episodes"] == 2 and budget["data"]["per_task"] == {
        "handle-press": 2}
    printed = capsys.readouterr().out
    assert "| handle-press |" in printed and "| 81.3 |" in printed and "43.1" in printed
    assert "2 episodes (2 with actions, 48 steps each)" in printed
    assert (out / "table.md").read_text().startswith("| task | ours (unipi) |")
