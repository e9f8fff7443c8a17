"""Settings of the behaviour-cloning baseline and its training (section ``bc`` of the config).

    unipi train bc --config configs/tabletop.yaml --out runs/bc bc.steps=3000

What BC learns from (``bc.episodes``): behaviour cloning needs the expert's actions,
and a dataset stores them only for its labelled episodes (``--labelled-fraction`` of
``unipi collect``; 0.1 by default). ``labelled`` trains on those; ``all`` trains on
every episode and refuses a dataset where some episodes have no actions. To give BC
every demonstration, collect the same seeds again with ``--labelled-fraction 1.0``
(collection is seeded, so it yields the same episodes) and point ``data.root`` at it.
"""

from __future__ import annotations

from dataclasses import dataclass

EPISODE_CHOICES = ("labelled", "all")


def _error(message: str) -> ValueError:
    # Imported late: unipi.config imports this module while it is being built.
    from unipi.config import ConfigError

    return ConfigError(message)


@dataclass
class BCConfig:
    # inputs and outputs
    history: int = 1  # camera frames fed: the current one and history - 1 before it
    use_state: bool = False  # also feed proprioception (ee xyz, suction holding)
    chunk: int = 8  # future actions predicted per query (action chunking)
    execute: int = 4  # of those, executed before the policy is queried again
    episodes: str = "labelled"  # labelled | all (see the module docstring)

    # model
    channels: int = 32  # conv encoder width; two residual blocks of 2x this width
    d_model: int = 128  # transformer width
    num_layers: int = 3
    num_heads: int = 4
    ff_mult: int = 4  # feed-forward width = ff_mult * d_model
    dropout: float = 0.1

    # optimisation
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr * 0.1 at `steps`
    grad_clip: float = 1.0  # max grad norm; 0 turns clipping off
    batch_size: int = 64
    steps: int = 3000
    checkpoint_every: int = 500  # also written at the end of every run
    log_every: int = 100
    val_fraction: float = 0.1  # episodes held out (by seed) for the action-error report
    shift_augment: int = 2  # random shift in pixels, the same for every frame of an item
    workers: int = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        positive = {
            "history": self.history, "chunk": self.chunk, "execute": self.execute,
            "channels": self.channels, "d_model": self.d_model,
            "num_layers": self.num_layers, "num_heads": self.num_heads,
            "ff_mult": self.ff_mult, "batch_size": self.batch_size, "steps": self.steps,
            "checkpoint_every": self.checkpoint_every, "log_every": self.log_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise _error(f"bc.{key}={value}: must be a positive integer")
        if self.execute > self.chunk:
            raise _error(f"bc.execute={self.execute}: must be <= bc.chunk={self.chunk}")
        if self.episodes not in EPISODE_CHOICES:
            raise _error(f"bc.episodes={self.episodes!r}: must be one of {EPISODE_CHOICES}")
        if self.d_model % self.num_heads:
            raise _error(f"bc.d_model={self.d_model}: must be divisible by "
                         f"bc.num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise _error(f"bc.dropout={self.dropout}: must be in [0, 1)")
        if not self.lr > 0:
            raise _error(f"bc.lr={self.lr}: must be > 0")
        if self.weight_decay < 0:
            raise _error(f"bc.weight_decay={self.weight_decay}: must be >= 0")
        if not 0 <= self.warmup_steps < self.steps:
            raise _error(
                f"bc.warmup_steps={self.warmup_steps}: must be in [0, bc.steps={self.steps})"
            )
        if self.grad_clip < 0:
            raise _error(f"bc.grad_clip={self.grad_clip}: must be >= 0 (0 = no clipping)")
        if not 0.0 < self.val_fraction < 1.0:
            raise _error(f"bc.val_fraction={self.val_fraction}: must be in (0, 1)")
        if self.shift_augment < 0:
            raise _error(f"bc.shift_augment={self.shift_augment}: must be >= 0 pixels")
        if self.workers < 0:
            raise _error(f"bc.workers={self.workers}: must be >= 0")
