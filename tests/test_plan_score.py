"""The plan-level scorer reads demonstrations right and wrong plans as failures."""

import dataclasses

import numpy as np
import pytest

import envs
from envs.expert import ScriptedExpert
from envs.tasks import Task, tasks_in_split
from unipi.plan_score import HUES, PlanScorer, StartScene

OPPOSITE = {"left of": "right of", "right of": "left of", "behind": "in front of",
            "in front of": "behind"}


@pytest.fixture(scope="module")
def place_env():
    env = envs.make_env("place", image_size=(32, 32))
    yield env
    env.close()


@pytest.fixture(scope="module")
def relation_env():
    env = envs.make_env("relation", image_size=(32, 32))
    yield env
    env.close()


def _run(env, seed: int, instruction: str, executed: Task | None = None, steps: int = 56):
    """Frames (steps + 1, H, W, 3) of the expert doing ``executed`` (default: the
    instruction) and the scene of ``instruction``."""
    obs, _ = env.reset(seed=seed, options={"instruction": instruction})
    scene = StartScene.from_env(env)
    if executed is not None:
        env.unwrapped.task = executed
    expert = ScriptedExpert()
    expert.reset(env)
    frames = [obs["image"]]
    for _ in range(steps):
        obs, *_ = env.step(expert.act(obs))
        frames.append(obs["image"])
    return np.stack(frames), scene


def test_camera_projects_blocks_onto_their_colour(place_env):
    scorer = PlanScorer()
    for seed in range(5):
        obs, _ = place_env.reset(seed=seed, options={"split": "seen"})
        env = place_env.unwrapped
        cam = env.camera()
        for i, colour in enumerate(env.layout.block_colours):
            top = env.block_position(i) + [0, 0, 0.025]
            u, v = cam.project(top)
            assert scorer.colour_mask(obs["image"], colour)[int(v), int(u)], (seed, colour)
            back = cam.unproject(np.array([u, v]), top[2])
            np.testing.assert_allclose(back, top, atol=1e-9)


def test_hues_of_the_palette_are_far_apart():
    from envs.tabletop import RGB

    assert set(HUES) == set(RGB)
    hues = sorted(HUES.values())
    gaps = np.diff(hues + [hues[0] + 360])
    assert gaps.min() > 2 * PlanScorer().hue_tolerance


@pytest.mark.parametrize("family", ["place", "relation"])
def test_demonstrations_succeed_and_copies_fail(family, place_env, relation_env):
    env = place_env if family == "place" else relation_env
    scorer = PlanScorer()
    tasks = tasks_in_split(family, "seen")
    demo, copy = [], []
    for seed in range(12):
        frames, scene = _run(env, 1000 + seed, tasks[seed * 7 % len(tasks)].instruction)
        assert env.unwrapped.is_success()
        demo.append(scorer.score(frames[::8], scene).success)
        copy.append(scorer.score(np.repeat(frames[:1], 8, axis=0), scene).success)
    assert np.mean(demo) >= 11 / 12
    assert not any(copy)


def test_wrong_bowl_and_wrong_side_fail(place_env, relation_env):
    scorer = PlanScorer()
    places, relations = tasks_in_split("place", "seen"), tasks_in_split("relation", "seen")
    for seed in range(6):
        task = places[seed]
        place_env.reset(seed=seed, options={"instruction": task.instruction})
        other = next(c for c in place_env.unwrapped.layout.bowl_colours if c != task.target)
        frames, scene = _run(place_env, seed, task.instruction,
                             dataclasses.replace(task, target=other))
        assert not scorer.score(frames, scene).success

        task = relations[seed * 5]
        flipped = dataclasses.replace(task, relation=OPPOSITE[task.relation])
        frames, scene = _run(relation_env, seed, task.instruction, flipped)
        result = scorer.score(frames, scene)
        assert not result.target_ok and result.target_found


def test_moving_another_block_fails(place_env):
    scorer = PlanScorer()
    task = tasks_in_split("place", "seen")[3]
    place_env.reset(seed=3, options={"instruction": task.instruction})
    other_block = place_env.unwrapped.layout.block_colours[1]
    frames, scene = _run(place_env, 3, task.instruction,
                         dataclasses.replace(task, block=other_block))
    result = scorer.score(frames, scene)
    assert not result.success and not result.others_unmoved


def test_bad_video_is_refused(place_env):
    place_env.reset(seed=0, options={"split": "seen"})
    scene = StartScene.from_env(place_env)
    with pytest.raises(ValueError, match="expected"):
        PlanScorer().score(np.zeros((4, 16, 16, 3), np.uint8), scene)
    with pytest.raises(ValueError, match="uint8"):
        PlanScorer().score(np.zeros((4, 32, 32, 3), np.float32), scene)
