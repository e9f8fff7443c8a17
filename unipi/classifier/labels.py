"""What a frame classifier is asked, and the labels of demonstration frames.

Targets (``classifier.target``)::

    block_side    is the <colour> block left (x < 0) or right of the table's centre?
                  classes (left, right)
    in_bowl       is the <colour> block resting inside a bowl?   classes (outside, inside)
    gripper_side  is the end effector left or right of centre?   classes (left, right)

Labels come from simulator truth, not from pixels. A dataset of ``unipi collect``
stores frames, end-effector states and (for a fraction of episodes) actions, but no
block positions; every episode is a deterministic function of its seed and
instruction, so ``replay_episode`` resets the env to (seed, instruction), runs the
scripted expert again, checks that it reproduces the recorded states exactly, and
reads ``privileged_state()`` after every step. ``gripper_side`` needs no replay: the
end effector's position is in the recorded state.

A frame whose scene has no block of the colour asked about has label -1 and is not
used. ``judge_frame`` reads the same targets off an imagined frame by colour
(``unipi.plan_score.PlanScorer``), independently of any learned classifier, so that
guidance can be measured with something it did not optimise.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from unipi.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)

NO_LABEL = -1


@dataclass(frozen=True)
class Target:
    """One question about a frame: its classes and how a state answers it.

    ``label(sim, ee, colour)``: sim = ``privileged_state()`` (None when not needed),
    ee = the recorded state (xyz, gripper) -> class index or ``NO_LABEL``.
    """

    name: str
    classes: tuple[str, ...]
    default_class: str
    needs_colour: bool
    needs_sim: bool
    label: Callable[[dict | None, np.ndarray, str], int]


def _block_side(sim, ee, colour) -> int:
    pos = sim["blocks"].get(colour)
    return NO_LABEL if pos is None else int(pos[0] >= 0.0)


def _in_bowl(sim, ee, colour) -> int:
    from envs.tabletop import BOWL_INNER_HALF, REST_MAX_Z

    pos = sim["blocks"].get(colour)
    if pos is None:
        return NO_LABEL
    if sim["holding"] == colour or pos[2] > REST_MAX_Z:
        return 0
    return int(any(np.abs(pos[:2] - b[:2]).max() < BOWL_INNER_HALF for b in sim["bowls"].values()))


def _gripper_side(sim, ee, colour) -> int:
    return int(ee[0] >= 0.0)


TARGETS = {
    "block_side": Target("block_side", ("left", "right"), "left", True, True, _block_side),
    "in_bowl": Target("in_bowl", ("outside", "inside"), "inside", True, True, _in_bowl),
    "gripper_side": Target("gripper_side", ("left", "right"), "left", False, False,
                           _gripper_side),
}


# --------------------------------------------------------------------------- replay
def replay_episode(env, episode) -> list[dict]:
    """Simulator states of every frame of a recorded episode: T + 1 ``privileged_state``s.

    Re-runs the scripted expert from the episode's (seed, instruction), as ``unipi
    collect`` did; refuses an episode whose recorded states it does not reproduce.
    """
    from envs.expert import ScriptedExpert
    from unipi.data.format import DatasetFormatError

    rec = episode.record
    obs, _ = env.reset(seed=int(rec.seed), options={"instruction": rec.instruction})
    expert = ScriptedExpert()
    expert.reset(env)
    states, ee = [env.unwrapped.privileged_state()], [obs["state"]]
    for _ in range(rec.length):
        obs, *_ = env.step(expert.act(obs))
        states.append(env.unwrapped.privileged_state())
        ee.append(obs["state"])
    err = float(np.abs(np.stack(ee) - episode.states).max())
    if err > 1e-4:
        raise DatasetFormatError(
            f"episode seed={rec.seed}: replaying it does not reproduce its recorded states "
            f"(max error {err:.3g}); the env changed since collection, so collect the "
            "dataset again or use classifier.target=gripper_side (no replay)")
    return states


def episode_labels(episode, target: Target, colour: str, envs_by_family: dict) -> np.ndarray:
    """int64 (T + 1,) labels of every frame of one episode (``NO_LABEL`` where undefined)."""
    if target.needs_sim:
        sims = replay_episode(envs_by_family[episode.record.family], episode)
    else:
        sims = [None] * (episode.record.length + 1)
    return np.array([target.label(s, e, colour) for s, e in zip(sims, episode.states)],
                    dtype=np.int64)


def dataset_labels(episodes: list, target: Target, colour: str,
                   cache: Path | None = None, progress: bool = True) -> dict[int, np.ndarray]:
    """{seed: (T + 1,) labels} of ``episodes``; read from / written to ``cache`` (.npz)."""
    key = np.array([target.name, colour])
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if (data["key"] == key).all():
                cached = dict(zip(data["seeds"].tolist(),
                                  np.split(data["labels"], np.cumsum(data["lengths"])[:-1])))
                if all(e.record.seed in cached for e in episodes):
                    logger.info(f"labels of {len(episodes)} episodes read from {str(cache)!r}")
                    return {e.record.seed: cached[e.record.seed] for e in episodes}
    labels = _replay_all(episodes, target, colour, progress)
    if cache is not None:
        buf = io.BytesIO()
        seeds = list(labels)
        np.savez(buf, key=key, seeds=np.array(seeds),
                 lengths=np.array([len(labels[s]) for s in seeds]),
                 labels=np.concatenate([labels[s] for s in seeds]))
        atomic_write_bytes(cache, buf.getvalue())
    return labels


def _replay_all(episodes, target: Target, colour: str, progress: bool) -> dict:
    import envs

    envs_by_family = {}
    if target.needs_sim:
        size = tuple(episodes[0].frames.shape[1:3])
        steps = max(e.record.length for e in episodes) + 1
        for family in sorted({e.record.family for e in episodes}):
            envs_by_family[family] = envs.make_env(family, image_size=size,
                                                   max_episode_steps=max(steps, 80))
    try:
        return {e.record.seed: episode_labels(e, target, colour, envs_by_family)
                for e in tqdm(episodes, desc=f"labels {target.name}", disable=not progress)}
    finally:
        for env in envs_by_family.values():
            env.close()


# ------------------------------------------------------------------- reading plans
def judge_frame(target: Target, frame: np.ndarray, first: np.ndarray, scene,
                colour: str) -> int:
    """The target's class of an imagined ``frame`` (H, W, 3) uint8, read by colour.

    ``first`` is the plan's frame 0 and ``scene`` its ``unipi.plan_score.StartScene``.
    Returns ``NO_LABEL`` when the block is not in the scene or not found in the frame.
    Only block targets can be read off pixels; ``gripper_side`` raises.
    """
    from envs.tabletop import BOWL_INNER_HALF
    from unipi.plan_score import PlanScorer

    if not target.needs_colour:
        raise NotImplementedError(f"target {target.name!r} has no pixel reading; only "
                                  "block_side and in_bowl can be judged from frames")
    if colour not in scene.block_colours:
        return NO_LABEL
    xy = PlanScorer().locate(frame, colour, scene, first)
    if xy is None:
        return NO_LABEL
    if target.name == "block_side":
        return int(xy[0] >= 0.0)
    return int(any(np.abs(xy - b).max() < BOWL_INNER_HALF for b in scene.bowl_xy))
