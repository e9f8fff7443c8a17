"""Disjoint seed ranges: demonstrations are collected from one, evaluation uses the other.

Every episode on disk and every evaluation record stores its seed, so a reader can
check that no evaluated start state was seen in training.
"""

TRAIN_SEED_START = 0
EVAL_SEED_START = 10_000_000  # no demonstration seed reaches this
SEED_RANGE = 10_000_000


def train_seed(index: int, offset: int = 0) -> int:
    seed = TRAIN_SEED_START + offset + index
    if not TRAIN_SEED_START <= seed < TRAIN_SEED_START + SEED_RANGE:
        raise ValueError(f"training seed {seed} leaves the training range")
    return seed


def eval_seed(index: int, offset: int = 0) -> int:
    seed = EVAL_SEED_START + offset + index
    if not EVAL_SEED_START <= seed < EVAL_SEED_START + SEED_RANGE:
        raise ValueError(f"evaluation seed {seed} leaves the evaluation range")
    return seed
