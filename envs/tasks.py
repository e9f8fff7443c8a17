"""Tasks of the tabletop: what an instruction asks, how it is written and parsed,
and which combinations are "seen" in training and which are held out as "novel".

Two families:

- ``place``:    "place the <block> block in the <target> bowl"
- ``relation``: "place the <block> block <relation> the <target> block"

Relations follow the camera's image convention: "right of" = +x (image right),
"left of" = -x, "behind" = +y (image top), "in front of" = -y (image bottom).

The seen/novel split is stored in ``envs/splits.json`` and was produced by
``generate_splits()``; to regenerate after changing colours or the seed::

    python -m envs.tasks --write
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
RELATIONS = ("left of", "right of", "in front of", "behind")
FAMILIES = ("place", "relation")
SPLITS = ("seen", "novel")

# Unit xy direction in which the moved block should end up, relative to the reference.
RELATION_DIRECTIONS = {
    "left of": (-1.0, 0.0),
    "right of": (1.0, 0.0),
    "in front of": (0.0, -1.0),
    "behind": (0.0, 1.0),
}

SPLITS_PATH = Path(__file__).with_name("splits.json")
SPLIT_SEED = 0
NOVEL_FRACTION = 0.3


@dataclass(frozen=True)
class Task:
    """One instruction, as data.

    Attributes:
        family: "place" or "relation".
        block: colour of the block to move.
        target: colour of the bowl (place) or of the reference block (relation).
        relation: one of RELATIONS for "relation", None for "place".
    """

    family: str
    block: str
    target: str
    relation: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}: expected one of {FAMILIES}")
        for name in ("block", "target"):
            value = getattr(self, name)
            if value not in COLOURS:
                raise ValueError(f"{name} colour {value!r} is unknown; expected one of {COLOURS}")
        if self.family == "place" and self.relation is not None:
            raise ValueError(f"relation={self.relation!r}: a 'place' task takes no relation")
        if self.family == "relation":
            if self.relation not in RELATIONS:
                raise ValueError(f"relation={self.relation!r}: expected one of {RELATIONS}")
            if self.block == self.target:
                raise ValueError(
                    f"impossible instruction: the {self.block} block cannot be placed "
                    f"{self.relation} itself; block and target colours must differ"
                )

    @property
    def instruction(self) -> str:
        """The instruction text, e.g. "place the red block in the blue bowl"."""
        if self.family == "place":
            return f"place the {self.block} block in the {self.target} bowl"
        return f"place the {self.block} block {self.relation} the {self.target} block"


_PLACE_RE = re.compile(r"^place the (\S+) block in the (\S+) bowl$")
_RELATION_RE = re.compile(r"^place the (\S+) block (.+?) the (\S+) block$")


def parse_instruction(text: str) -> Task:
    """Parse an instruction (case and whitespace insensitive, a final '.' allowed).

    Raises:
        ValueError: naming the unknown colour or relation, an instruction that matches
            no family's pattern, or an impossible one (a block relative to itself).
    """
    if not isinstance(text, str):
        raise ValueError(f"instruction must be a str, got {type(text).__name__}: {text!r}")
    norm = " ".join(text.lower().split()).rstrip(".").strip()
    match = _PLACE_RE.match(norm)
    if match:
        return Task("place", match.group(1), match.group(2))
    match = _RELATION_RE.match(norm)
    if match:
        return Task("relation", match.group(1), match.group(3), match.group(2))
    raise ValueError(
        f"instruction {text!r} matches no task family {FAMILIES}; expected "
        "'place the <colour> block in the <colour> bowl' or "
        "'place the <colour> block <relation> the <colour> block' "
        f"with relation in {RELATIONS}"
    )


def all_tasks(family: str) -> list[Task]:
    """Every task of a family in a fixed order (36 for place, 120 for relation)."""
    if family == "place":
        return [Task("place", b, t) for b, t in itertools.product(COLOURS, COLOURS)]
    if family == "relation":
        return [
            Task("relation", b, t, r)
            for b, t, r in itertools.product(COLOURS, COLOURS, RELATIONS)
            if b != t
        ]
    raise ValueError(f"family={family!r}: expected one of {FAMILIES}")


def _covers_everything(seen: list[Task]) -> bool:
    """Whether each colour is a block and a target, and each relation is used, in `seen`."""
    blocks = {t.block for t in seen}
    targets = {t.target for t in seen}
    relations = {t.relation for t in seen if t.relation is not None}
    needs_relations = any(t.family == "relation" for t in seen)
    ok_relations = relations == set(RELATIONS) if needs_relations else True
    return blocks == set(COLOURS) and targets == set(COLOURS) and ok_relations


def generate_splits(seed: int = SPLIT_SEED, novel_fraction: float = NOVEL_FRACTION) -> dict:
    """Assign every task of each family once to "seen" or "novel", deterministically.

    A shuffle of all tasks puts the first round(novel_fraction * n) in "novel"; the
    shuffle is redrawn until every colour appears in "seen" both as block and as
    target (and every relation is seen), so novel tasks are new combinations of
    known words.

    Returns:
        {"seed", "novel_fraction", "place": {"seen": [instr], "novel": [instr]},
        "relation": {...}}, instruction lists sorted.
    """
    rng = np.random.default_rng(seed)
    out: dict = {"seed": seed, "novel_fraction": novel_fraction}
    for family in FAMILIES:
        tasks = all_tasks(family)
        n_novel = int(round(novel_fraction * len(tasks)))
        while True:
            order = rng.permutation(len(tasks))
            novel = [tasks[i] for i in order[:n_novel]]
            seen = [tasks[i] for i in order[n_novel:]]
            if _covers_everything(seen):
                break
        out[family] = {
            "seen": sorted(t.instruction for t in seen),
            "novel": sorted(t.instruction for t in novel),
        }
    return out


@lru_cache(maxsize=1)
def _load_splits() -> dict[str, dict[str, tuple[Task, ...]]]:
    """Read envs/splits.json into {family: {split: tasks}}."""
    try:
        raw = json.loads(SPLITS_PATH.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RuntimeError(f"cannot read task splits from {SPLITS_PATH}: {err}") from err
    return {
        family: {
            split: tuple(parse_instruction(text) for text in raw[family][split])
            for split in SPLITS
        }
        for family in FAMILIES
    }


def split_of(task: Task) -> str:
    """"seen" or "novel" for a task, as stored in envs/splits.json."""
    for split in SPLITS:
        if task in _load_splits()[task.family][split]:
            return split
    raise ValueError(f"task {task.instruction!r} is in no split of {SPLITS_PATH}")


def tasks_in_split(family: str, split: str) -> list[Task]:
    """The tasks of `family` ("place"|"relation") in `split` ("seen"|"novel")."""
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: expected one of {FAMILIES}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    return list(_load_splits()[family][split])


def _main() -> None:
    parser = argparse.ArgumentParser(description="Generate the seen/novel task split.")
    parser.add_argument("--write", action="store_true", help=f"write {SPLITS_PATH}")
    args = parser.parse_args()
    text = json.dumps(generate_splits(), indent=1) + "\n"
    if args.write:
        SPLITS_PATH.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    _main()
