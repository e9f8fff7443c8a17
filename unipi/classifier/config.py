"""Settings of the frame classifier used for classifier guidance (section ``classifier``).

The classifier reads one planner-resolution frame and answers a question about the
scene (``target``, see ``unipi.classifier.labels.TARGETS``); sampling can then be
steered toward one of its classes (``unipi plan --guide DIR --guide-weight W``).
"""

from __future__ import annotations

from dataclasses import dataclass


def _error(message: str) -> ValueError:
    from unipi.config import ConfigError  # late: unipi.config imports this module

    return ConfigError(message)


@dataclass
class ClassifierConfig:
    # what is asked of a frame
    target: str = "block_side"  # block_side | in_bowl | gripper_side
    colour: str = "red"  # the block block_side and in_bowl ask about

    # model
    channels: int = 16  # stem width; two stride-2 stages of 2x that width follow
    hidden: int = 64  # width of the MLP head

    # data
    frame_every: int = 2  # use every k-th frame of an episode
    max_episodes: int = 0  # use the first N episodes by seed; 0 = all
    val_fraction: float = 0.1  # episodes (by seed) held out for the accuracy report
    # Gaussian noise of std drawn uniformly in [0, noise_augment] is added to training
    # frames: guidance reads the model's blurry, noisy early predictions of clean frames.
    noise_augment: float = 0.15

    # optimisation
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up, then cosine decay to lr * 0.1 at `steps`
    batch_size: int = 64
    steps: int = 1500
    checkpoint_every: int = 250  # also written at the end of every run

    def __post_init__(self) -> None:
        from unipi.classifier.labels import TARGETS

        if self.target not in TARGETS:
            raise _error(f"classifier.target={self.target!r}: must be one of {tuple(TARGETS)}")
        if TARGETS[self.target].needs_colour:
            from envs.tasks import COLOURS

            if self.colour not in COLOURS:
                raise _error(f"classifier.colour={self.colour!r}: must be one of {COLOURS}")
        for key in ("channels", "hidden", "frame_every", "batch_size", "steps",
                    "checkpoint_every"):
            if getattr(self, key) < 1:
                raise _error(f"classifier.{key}={getattr(self, key)}: must be >= 1")
        if self.max_episodes < 0:
            raise _error(f"classifier.max_episodes={self.max_episodes}: must be >= 0 (0 = all)")
        if not 0.0 < self.val_fraction < 1.0:
            raise _error(f"classifier.val_fraction={self.val_fraction}: must be in (0, 1)")
        if self.noise_augment < 0:
            raise _error(f"classifier.noise_augment={self.noise_augment}: must be >= 0")
        if not self.lr > 0:
            raise _error(f"classifier.lr={self.lr}: must be > 0")
        if self.weight_decay < 0:
            raise _error(f"classifier.weight_decay={self.weight_decay}: must be >= 0")
        if not 0 <= self.warmup_steps < self.steps:
            raise _error(f"classifier.warmup_steps={self.warmup_steps}: must be in "
                         f"[0, classifier.steps={self.steps})")
