"""A model folder: everything the agent needs, trained with the project's commands.

    MODEL_DIR/
        config.json       the resolved ExperimentConfig the models were trained with
        planner/          UniPiPipeline.save_pretrained (base + TSR U-Nets, scheduler)
        idm/              InverseDynamicsModel.save_pretrained (with action statistics)
        MODEL_CARD.md     data, steps, wall time, hardware, measured success

The package ships one such folder, the default agent, under ``unipi/weights/tabletop``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from unipi.config import ExperimentConfig, config_from_dict

DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "tabletop"


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    path = Path(model) if model else DEFAULT_MODEL_DIR
    if not (path / "config.json").is_file():
        hint = (
            "the shipped default weights are missing from this install; reinstall the "
            "package" if model is None else
            "train one with `unipi train planner` / `unipi train idm` and "
            "`unipi export --run RUN_DIR --out MODEL_DIR`"
        )
        raise FileNotFoundError(f"model folder {str(path)!r} has no config.json: {hint}")
    return path


def load_model_config(model: str | os.PathLike | None,
                      overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The config a model folder was trained with, then ``key=value`` ``overrides``."""
    path = resolve_model_dir(model)
    return config_from_dict(json.loads((path / "config.json").read_text()), overrides)


def load_planner(model: str | os.PathLike | None, device: str = "cpu"):
    from unipi.planner.pipeline import UniPiPipeline

    path = resolve_model_dir(model) / "planner"
    pipe = UniPiPipeline.from_pretrained(path)
    for unet in (pipe.base_unet, pipe.tsr_unet):
        if unet is not None:
            unet.to(device)
    return pipe


def load_idm(model: str | os.PathLike | None, device: str = "cpu"):
    from inverse_dynamics.model import InverseDynamicsModel

    path = resolve_model_dir(model) / "idm"
    return InverseDynamicsModel.from_pretrained(path).to(device)


def export_model_dir(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Assemble ``unipi train`` outputs of one run folder into a model folder."""
    import shutil

    from unipi.checkpoint import atomic_write_dir
    from unipi.model_card import training_facts, write_model_card
    from unipi.planner.train import export_pipeline

    run, out = Path(run), Path(out)
    base_cfg = run / "base" / "checkpoint" / "config.json"
    idm_dir = run / "idm"
    missing = [str(p) for p in (base_cfg, idm_dir) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"run folder {str(run)!r} lacks {', '.join(missing)}: train the planner "
            "(both stages) and the IDM into it first"
        )

    def write(tmp: Path) -> None:
        if export_pipeline(run, tmp / "planner") is None:
            raise FileNotFoundError(f"run folder {str(run)!r}: a planner stage is missing")
        shutil.copytree(idm_dir, tmp / "idm")
        shutil.copy(base_cfg, tmp / "config.json")
        for extra in ("idm_metrics.json",):
            if (run / extra).is_file():
                shutil.copy(run / extra, tmp / extra)
        cfg = config_from_dict(json.loads(base_cfg.read_text()))
        (tmp / "training.json").write_text(json.dumps(training_facts(run, cfg), indent=2))
        write_model_card(tmp)

    return atomic_write_dir(out, write)
