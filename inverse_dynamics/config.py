"""Settings of the inverse-dynamics model and its training (section ``idm`` of the config).

The chunk length (env actions per pair of planned frames) is not set here: it is the
planner's frame spacing, ``planner.frame_stride // planner.tsr_factor``, so that the
IDM always translates exactly the gap between two consecutive frames of a plan.
"""

from __future__ import annotations

from dataclasses import dataclass


def _error(message: str) -> ValueError:
    # Imported late: unipi.config imports this module while it is being built.
    from unipi.config import ConfigError

    return ConfigError(message)


@dataclass
class IDMConfig:
    # model
    channels: int = 32  # width of the conv stem; the residual blocks use 1x, 2x, 2x
    hidden: int = 256  # width of the MLP head
    use_difference: bool = True  # add frame_b - frame_a as three more input channels

    # optimisation
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr * 0.1 at `steps`
    grad_clip: float = 1.0  # max grad norm; 0 turns clipping off
    batch_size: int = 64
    steps: int = 2000
    checkpoint_every: int = 500  # also written at the end of every run
    val_fraction: float = 0.1  # labelled episodes held out for the action-error report
    shift_augment: int = 2  # random shift in pixels, the same for both frames of a pair
    workers: int = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        positive = {
            "channels": self.channels, "hidden": self.hidden,
            "batch_size": self.batch_size, "steps": self.steps,
            "checkpoint_every": self.checkpoint_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise _error(f"idm.{key}={value}: must be a positive integer")
        if not self.lr > 0:
            raise _error(f"idm.lr={self.lr}: must be > 0")
        if self.weight_decay < 0:
            raise _error(f"idm.weight_decay={self.weight_decay}: must be >= 0")
        if not 0 <= self.warmup_steps < self.steps:
            raise _error(
                f"idm.warmup_steps={self.warmup_steps}: must be in [0, idm.steps={self.steps})"
            )
        if self.grad_clip < 0:
            raise _error(f"idm.grad_clip={self.grad_clip}: must be >= 0 (0 = no clipping)")
        if not 0.0 < self.val_fraction < 1.0:
            raise _error(f"idm.val_fraction={self.val_fraction}: must be in (0, 1)")
        if self.shift_augment < 0:
            raise _error(f"idm.shift_augment={self.shift_augment}: must be >= 0 pixels")
        if self.workers < 0:
            raise _error(f"idm.workers={self.workers}: must be >= 0")
