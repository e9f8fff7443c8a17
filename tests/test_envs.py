"""Tabletop environments, tasks, splits and the scripted expert (a few seconds on 2 cores)."""

from __future__ import annotations

import json

import gymnasium
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.expert import ScriptedExpert, run_expert_episode
from envs.tabletop import TabletopEnv
from envs.tasks import (
    COLOURS,
    FAMILIES,
    RELATIONS,
    SPLITS_PATH,
    Task,
    all_tasks,
    generate_splits,
    parse_instruction,
    split_of,
    tasks_in_split,
)


@pytest.fixture(scope="module", params=FAMILIES)
def env(request):
    env = envs.make_env(request.param, render_mode="rgb_array", image_size=(32, 32))
    yield env
    env.close()


def _set_block(env: TabletopEnv, index: int, xyz) -> None:
    adr = env._block_qpos[index]
    env.data.qpos[adr : adr + 3] = xyz
    env.data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)
    mujoco.mj_forward(env.model, env.data)


# ---------------------------------------------------------------------------- env API
@pytest.mark.filterwarnings("ignore:.*Box observation space m.*infinity")
def test_env_checker(env):
    check_env(env.unwrapped, skip_render_check=False)


def test_make_spaces_and_time_limit(env):
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert env.spec.max_episode_steps == envs.MAX_EPISODE_STEPS
    assert env.render().shape == (128, 128, 3)
    assert set(info) >= {"instruction", "task", "split", "success"}
    assert info["success"] is False and info["split"] == "seen"
    assert parse_instruction(info["instruction"]) == info["task"]


def test_seeding_determinism(env):
    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        frames = [obs["image"]]
        for action in np.random.default_rng(1).uniform(-1, 1, size=(4, 4)):
            frames.append(env.step(action.astype(np.float32))[0]["image"])
        return np.stack(frames), env.unwrapped.layout

    frames_a, layout_a = rollout(5)
    frames_b, layout_b = rollout(5)
    frames_c, _ = rollout(6)
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(layout_a.block_xy, layout_b.block_xy)
    assert layout_a.block_colours == layout_b.block_colours
    assert not np.array_equal(frames_a[0], frames_c[0])


def test_image_orientation():
    """+x shows on the image's right half, +y toward its top, -y toward its bottom."""
    env = TabletopEnv("place", render_mode="rgb_array", render_size=(64, 64))
    env.reset(seed=0)
    for i in range(2):  # bowls out of sight, only block 0 stays on the table
        env.model.body_pos[env._bowl_body[i]] = (3.0 + i, 3.0, 0.0)
    for i in (1, 2):
        _set_block(env, i, (3.0, -3.0 - i, 0.025))
    env.model.geom_rgba[env._block_geom[0]] = (1.0, 0.0, 0.0, 1.0)

    def red_centroid(xyz):
        _set_block(env, 0, xyz)
        image = env.render().astype(int)
        rows, cols = np.nonzero((image[..., 0] > 150) & (image[..., 1] < 60))
        assert len(rows) > 0, f"red block at {xyz} not visible"
        return rows.mean(), cols.mean()

    assert red_centroid((0.15, 0.0, 0.025))[1] > 40  # right
    assert red_centroid((-0.15, 0.0, 0.025))[1] < 24  # left
    assert red_centroid((0.0, 0.15, 0.025))[0] < 24  # behind = top
    assert red_centroid((0.0, -0.15, 0.025))[0] > 40  # in front = bottom
    env.close()


def test_reset_options(env):
    family = env.unwrapped.family
    task = tasks_in_split(family, "novel")[0]
    _, info = env.reset(seed=1, options={"instruction": task.instruction.upper()})
    assert info["task"] == task and info["split"] == "novel"
    assert task.block in env.unwrapped.layout.block_colours
    _, info = env.reset(seed=1, options={"split": "novel"})
    assert split_of(info["task"]) == "novel"
    other = "relation" if family == "place" else "place"
    with pytest.raises(ValueError, match=other):
        env.reset(seed=0, options={"instruction": tasks_in_split(other, "seen")[0]})
    with pytest.raises(ValueError, match="unseen"):
        env.reset(seed=0, options={"split": "unseen"})


def test_constructor_and_action_validation():
    with pytest.raises(ValueError, match="stack"):
        TabletopEnv("stack")
    with pytest.raises(ValueError, match="image_size"):
        TabletopEnv("place", image_size=(32,))
    with pytest.raises(ValueError, match="human"):
        TabletopEnv("place", render_mode="human")
    env = TabletopEnv("place")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(3, dtype=np.float32))
    env.close()


def test_success_from_state(env):
    """Teleporting the block to target_position() succeeds; disturbing another fails."""
    unwrapped = env.unwrapped
    env.reset(seed=2)
    assert not unwrapped.is_success()
    moved = unwrapped.layout.block_colours.index(unwrapped.task.block)
    _set_block(unwrapped, moved, unwrapped.target_position())
    assert unwrapped.is_success()
    other = next(i for i in range(3) if i != moved)
    _set_block(unwrapped, other, unwrapped.block_position(other) + (0.05, 0.0, 0.0))
    assert not unwrapped.is_success()


# ---------------------------------------------------------------------------- expert
@pytest.mark.parametrize("family", FAMILIES)
def test_expert_succeeds(family):
    env = envs.make_env(family, image_size=(32, 32))
    for seed in range(3):
        episode = run_expert_episode(env, seed, max_steps=56)
        assert episode["success"], (seed, episode["instruction"])
        assert 0 < episode["done_step"] <= 56
        assert episode["frames"].shape == (57, 32, 32, 3)
        assert episode["actions"].shape == (56, 4) and episode["actions"].dtype == np.float32
        assert np.abs(episode["actions"]).max() <= 1.0
        assert not episode["actions"][-1].any()  # holds still after finishing
    env.close()


def test_expert_needs_reset_env():
    with pytest.raises(RuntimeError, match="reset"):
        ScriptedExpert().reset(TabletopEnv("place"))


# ---------------------------------------------------------------------------- tasks
def test_splits_match_generation_and_cover_everything():
    assert json.loads(SPLITS_PATH.read_text()) == generate_splits()
    for family, total in (("place", 36), ("relation", 120)):
        seen = set(tasks_in_split(family, "seen"))
        novel = set(tasks_in_split(family, "novel"))
        assert not seen & novel
        assert seen | novel == set(all_tasks(family)) and len(seen | novel) == total
        assert round(0.3 * total) == len(novel)
        assert {t.block for t in seen} == set(COLOURS) == {t.target for t in seen}
    assert {t.relation for t in tasks_in_split("relation", "seen")} == set(RELATIONS)


def test_instruction_round_trip():
    for family in FAMILIES:
        for task in all_tasks(family):
            assert parse_instruction(task.instruction) == task
    text = "  Place the RED block   in front of the Blue block. "
    assert parse_instruction(text) == Task("relation", "red", "blue", "in front of")


@pytest.mark.parametrize(
    "text, named",
    [
        ("place the pink block in the red bowl", "pink"),
        ("place the red block in the teal bowl", "teal"),
        ("place the red block above the blue block", "above"),
        ("stack the red block on the blue block", "stack the red block"),
        ("place the red block left of the red block", "red"),
    ],
)
def test_parse_errors_name_the_value(text, named):
    with pytest.raises(ValueError, match=named) as err:
        parse_instruction(text)
    assert "\n" not in str(err.value)


def test_registered_ids():
    assert "unipi/Place-v0" in gymnasium.registry and "unipi/Relation-v0" in gymnasium.registry
    with pytest.raises(ValueError, match="stack"):
        envs.make_env("stack")


def test_no_episode_starts_already_solved():
    """A start state that already satisfies the instruction would inflate success."""
    import envs as _envs

    for family in ("place", "relation"):
        env = _envs.make_env(family, image_size=(16, 16))
        solved = []
        for seed in range(10_000_000, 10_000_200):
            env.reset(seed=seed)
            if env.unwrapped.is_success():
                solved.append(seed)
        assert not solved, f"{family}: seeds {solved[:5]} start solved"


def test_frames_show_the_suction_command():
    import envs as _envs

    env = _envs.make_env("place", image_size=(32, 32))
    env.reset(seed=0)
    off, *_ = env.step(np.zeros(4, np.float32))
    on, *_ = env.step(np.array([0, 0, 0, 1], np.float32))
    assert np.abs(on["image"].astype(int) - off["image"].astype(int)).max() > 100


def test_make_by_module_prefix_needs_no_import():
    """``gymnasium.make("envs:unipi/Place-v0")`` imports the package that registers it."""
    import subprocess
    import sys

    code = ("import gymnasium; env = gymnasium.make('envs:unipi/Relation-v0', "
            "image_size=(16, 16)); print(env.reset(seed=0)[0]['image'].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "(16, 16, 3)"
