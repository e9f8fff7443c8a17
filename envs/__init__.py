"""Simulated tabletop environments for UniPi (MuJoCo + Gymnasium).

Importing this package registers ``unipi/Place-v0`` and ``unipi/Relation-v0`` (and
``unipi/MetaWorld-v0``, see ``envs.metaworld``)::

    import envs, gymnasium
    env = gymnasium.make("unipi/Place-v0", render_mode="rgb_array", image_size=(32, 32))

or, without the import, ``gymnasium.make("envs:unipi/Place-v0", ...)`` (gymnasium
imports the module named before the colon).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede mujoco import

import gymnasium  # noqa: E402

from envs.tasks import (  # noqa: E402
    COLOURS,
    FAMILIES,
    RELATIONS,
    Task,
    parse_instruction,
    split_of,
    tasks_in_split,
)

MAX_EPISODE_STEPS = 80
ENV_IDS = {"place": "unipi/Place-v0", "relation": "unipi/Relation-v0"}

for _family, _env_id in ENV_IDS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(
            _env_id,
            entry_point="envs.tabletop:TabletopEnv",
            kwargs={"family": _family},
            max_episode_steps=MAX_EPISODE_STEPS,
        )

# unipi/MetaWorld-v0 and unipi/MetaWorld-<task>-v0; making one needs the metaworld extra
from envs.metaworld import make_metaworld_env, register_envs  # noqa: E402

register_envs()


def make_env(family: str, **kwargs) -> gymnasium.Env:
    """``gymnasium.make`` for a family ("place" | "relation"); kwargs go to TabletopEnv."""
    if family not in ENV_IDS:
        raise ValueError(f"family={family!r}: expected one of {tuple(ENV_IDS)}")
    return gymnasium.make(ENV_IDS[family], **kwargs)


__all__ = [
    "COLOURS",
    "ENV_IDS",
    "FAMILIES",
    "MAX_EPISODE_STEPS",
    "RELATIONS",
    "Task",
    "make_env",
    "make_metaworld_env",
    "parse_instruction",
    "split_of",
    "tasks_in_split",
]
