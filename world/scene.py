"""Scenes (what an image shows) and the seeded scene sampler."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from .spec import (
    ALL_PAIRS,
    BACKGROUNDS,
    DEFAULT_SIDE,
    GRID,
    HELD_OUT_PAIRS,
    MAX_OBJECTS,
    POSITIONS,
    SIZES,
    TRAIN_PAIRS,
    UNKNOWN,
    max_jitter,
)

HeldOut = Literal["exclude", "include", "only"]


@dataclass(frozen=True)
class SceneObject:
    """One shape: what it is and which cell it sits in (dx, dy: integer jitter in pixels at the scene's side)."""

    size: str
    color: str
    shape: str
    cell: int
    dx: int = 0
    dy: int = 0

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def row(self) -> int:
        return self.cell // GRID

    @property
    def col(self) -> int:
        return self.cell % GRID

    @property
    def is_held_out(self) -> bool:
        return (self.color, self.shape) in HELD_OUT_PAIRS

    def key(self) -> tuple[str, str, str, int]:
        """(size, colour, shape, cell): what captions and scores compare."""
        return (self.size, self.color, self.shape, self.cell)


@dataclass(frozen=True)
class Scene:
    """A canvas: background and 1..3 objects in distinct cells, kept in reading order."""

    objects: tuple[SceneObject, ...]
    background: str = "white"
    side: int = DEFAULT_SIDE
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"objects share a cell: {cells}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: o.cell)))

    @cached_property
    def readable(self) -> bool:
        """False when the image parser could not read an object (its shape or colour is `unknown`)."""
        return not any(UNKNOWN in (o.shape, o.color) for o in self.objects)

    @property
    def has_held_out(self) -> bool:
        return any(o.is_held_out for o in self.objects)

    def keys(self) -> set[tuple[str, str, str, int]]:
        return {o.key() for o in self.objects}

    def to_dict(self) -> dict:
        return {
            "background": self.background,
            "side": self.side,
            "objects": [vars(o).copy() for o in self.objects],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return cls(objects, data.get("background", "white"), data.get("side", DEFAULT_SIDE))


def as_rng(seed_or_rng: int | random.Random | None) -> random.Random:
    """A `random.Random` from a seed, or the generator itself."""
    return seed_or_rng if isinstance(seed_or_rng, random.Random) else random.Random(seed_or_rng)


def sample_object_attrs(rng: random.Random, held_out: HeldOut = "exclude") -> tuple[str, str, str]:
    """(size, colour, shape), colour and shape uniform over the allowed pairs."""
    pairs = {"exclude": TRAIN_PAIRS, "include": ALL_PAIRS, "only": sorted(HELD_OUT_PAIRS)}[held_out]
    color, shape = rng.choice(pairs)
    return rng.choice(SIZES), color, shape


def sample_scene(
    seed_or_rng: int | random.Random | None = None,
    *,
    held_out: HeldOut = "exclude",
    num_objects: int | None = None,
    background: str | None = None,
    side: int = DEFAULT_SIDE,
) -> Scene:
    """Draw a scene as world.md specifies.

    held_out: "exclude" (training distribution, the default), "include" (all 48 pairs),
    or "only" (the first object drawn is a held-out pair; the rest may be any pair).
    """
    if held_out not in ("exclude", "include", "only"):
        raise ValueError(f"held_out must be 'exclude', 'include' or 'only', not {held_out!r}")
    rng = as_rng(seed_or_rng)
    n = num_objects if num_objects is not None else rng.randint(1, MAX_OBJECTS)
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"num_objects must be 1..{MAX_OBJECTS}, got {n}")
    bg = background if background is not None else rng.choice(tuple(BACKGROUNDS))
    cells = rng.sample(range(GRID * GRID), n)
    j = max_jitter(side)
    objects = []
    for i, cell in enumerate(cells):
        mode: HeldOut = held_out if held_out != "only" else ("only" if i == 0 else "include")
        size, color, shape = sample_object_attrs(rng, mode)
        objects.append(SceneObject(size, color, shape, cell, rng.randint(-j, j), rng.randint(-j, j)))
    return Scene(tuple(objects), bg, side)
