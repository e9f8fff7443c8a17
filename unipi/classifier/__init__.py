"""Frame classifiers for classifier guidance (``unipi plan --guide DIR``).

    config.py   ClassifierConfig, section ``classifier`` of the experiment config
    labels.py   targets (block_side, in_bowl, gripper_side), labels by replaying
                demonstrations in the simulator, and the pixel reading of plans
    model.py    FrameClassifier: one planner frame -> class logits
    train.py    train_classifier (``unipi train classifier``): resumable, held-out accuracy
"""

from __future__ import annotations

import os
from pathlib import Path


def load_classifier(path: str | os.PathLike, device: str = "cpu"):
    """The ``FrameClassifier`` of a classifier folder (``save_pretrained``) or of the run
    folder of ``unipi train classifier`` (which holds one under ``classifier/``)."""
    from unipi.classifier.model import FrameClassifier

    path = Path(path)
    for folder in (path, path / "classifier"):
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return FrameClassifier.from_pretrained(folder).to(device).eval()
    raise FileNotFoundError(f"--guide {str(path)!r} is not a classifier folder (no config.json "
                            "and safetensors weights); train one with `unipi train classifier "
                            "--config CONFIG --out DIR` and pass DIR")
