"""Tiny model and classifier folders for tests and ``benchmarks/constraints.py --tiny``.

Both are trained for two steps with the project's own commands, so they exercise the
whole path (collect, train, export, load) in seconds; their outputs mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from unipi.planner.testing import save_tiny_t5, tiny_overrides


def tiny_overrides_for(root: Path, data: Path) -> list[str]:
    """Config overrides of a 16x16 model trained on ``data`` with a tiny T5 in ``root``."""
    t5 = root / "t5"
    if not t5.is_dir():
        save_tiny_t5(t5)
    return tiny_overrides(16) + [
        f"data.root={data}", "text_encoder.type=t5", f"text_encoder.name_or_path={t5}",
        "planner.train.checkpoint_every=1", "idm.steps=2", "idm.warmup_steps=0",
        "idm.checkpoint_every=1", "idm.batch_size=8", "idm.channels=8", "idm.hidden=16",
        "agent.num_inference_steps=2", "agent.replan_every=4", "classifier.steps=2",
        "classifier.warmup_steps=0", "classifier.checkpoint_every=1",
        "classifier.batch_size=8", "classifier.channels=4", "classifier.hidden=8",
        "classifier.val_fraction=0.25",
    ]


def tiny_folders(root: str | Path, episodes: int = 4) -> tuple[Path, Path, Path]:
    """Collect ``episodes`` 16x16 demonstrations of both families, train every stage and
    a block_side classifier for two steps. Returns (data, model folder, classifier run)."""
    from unipi.cli import main

    root = Path(root)
    data, run = root / "data", root / "run"
    if main(["collect", "--env", "all", "--episodes", str(episodes), "--image-size", "16x16",
             "--labelled-fraction", "1.0", "--episode-steps", "56", "--out", str(data)]):
        raise RuntimeError("tiny collect failed")
    overrides = tiny_overrides_for(root, data)
    cfg = ["--config", str(Path(__file__).parents[2] / "configs" / "tabletop.yaml"),
           "--out", str(run), "--max-steps", "2"]
    for stage in ("base", "tsr"):
        if main(["train", "planner", "--stage", stage, *cfg, *overrides]):
            raise RuntimeError(f"tiny planner {stage} training failed")
    if main(["train", "idm", *cfg, *overrides]):
        raise RuntimeError("tiny IDM training failed")
    model = root / "model"
    if main(["export", "--run", str(run), "--out", str(model)]):
        raise RuntimeError("tiny export failed")
    classifier = root / "classifier"
    if main(["train", "classifier", "--config", cfg[1], "--out", str(classifier),
             "--max-steps", "2", *overrides]):
        raise RuntimeError("tiny classifier training failed")
    return data, model, classifier
