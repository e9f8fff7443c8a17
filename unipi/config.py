"""One experiment configuration, loaded from YAML and validated when it is built.

Every entry point (``unipi collect``, ``unipi train planner|idm``, ``unipi eval``)
reads the same file, e.g. ``configs/tabletop.yaml``; ``key=value`` overrides on the
command line use dotted paths (``planner.train.lr=1e-3``). Unknown keys and values
of the wrong type are refused by OmegaConf with the key's name; values outside what
is accepted are refused by the ``__post_init__`` of each section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from inverse_dynamics.config import IDMConfig
from unipi.agent_config import AgentConfig
from unipi.baselines.config import BCConfig
from unipi.classifier.config import ClassifierConfig
from unipi.planner.config import PlannerConfig, TextEncoderConfig

FAMILIES = ("place", "relation", "metaworld")  # metaworld: envs.metaworld (optional extra)


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass
class EnvConfig:
    """The simulated tabletop or Meta-World (see ``envs``)."""

    families: list[str] = field(default_factory=lambda: ["place", "relation"])
    image_size: list[int] = field(default_factory=lambda: [32, 32])  # (H, W) planner frames
    max_episode_steps: int = 80

    def __post_init__(self) -> None:
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise ConfigError(f"env.families={self.families!r}: each must be one of {FAMILIES}")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ConfigError(f"env.image_size={self.image_size!r}: expected [H, W], each >= 8")
        if self.max_episode_steps < 1:
            raise ConfigError(f"env.max_episode_steps={self.max_episode_steps}: must be >= 1")


@dataclass
class DataConfig:
    """Where demonstrations live and how clips are cut from them."""

    root: str = "data/tabletop"
    episodes: int = 1000
    labelled_fraction: float = 0.1
    workers: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.labelled_fraction <= 1.0:
            raise ConfigError(
                f"data.labelled_fraction={self.labelled_fraction}: must be in [0, 1]"
            )
        if self.episodes < 1:
            raise ConfigError(f"data.episodes={self.episodes}: must be a positive integer")


@dataclass
class ExperimentConfig:
    name: str = "tabletop"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    idm: IDMConfig = field(default_factory=IDMConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # guidance

    def __post_init__(self) -> None:
        self.planner.check_image_size(*self.env.image_size)


def load_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Build the config from defaults, then ``path`` (YAML), then ``overrides``."""
    schema = OmegaConf.structured(ExperimentConfig)
    layers: list[Any] = [schema]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        layers.append(OmegaConf.load(path))
    return _merge(layers, overrides, f"bad config ({path})", "planner.train.lr=1e-3")


def _merge(layers: list[Any], overrides: Sequence[str], what: str, example: str):
    """Merge ``layers`` and then ``key=value`` ``overrides`` into a validated config;
    a bad key or value is a one-line ``ConfigError`` starting with ``what``."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides {bad!r}: expected key=value, e.g. {example}")
    try:
        merged = OmegaConf.merge(*layers, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(merged)  # runs every __post_init__
    except OmegaConfBaseException as err:
        raise ConfigError(f"{what}: {err}".split("\n    full_key")[0]) from err


def config_to_dict(cfg: Any) -> dict:
    """A plain, JSON-serialisable dict of a (section of a) config."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(data: dict, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config saved as ``data`` (e.g. a model folder's config.json), then
    ``key=value`` ``overrides``, validated as ``load_config`` validates."""
    return _merge([OmegaConf.structured(ExperimentConfig), data], overrides, "bad config",
                  "agent.replan_every=8")
