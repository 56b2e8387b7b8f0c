"""The world's zero-shot classification tasks (world.md, Scores): labels, templates and ground truth."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from triptych.world import COLORS, NUMBER_WORDS, POSITIONS, SHAPES, SIZES, Scene, sample_scene

_SHAPE_TEMPLATES = tuple(f"a {{}} {s}" for s in SHAPES)  # colour ensembles: "a red circle", "a red square", ...


@dataclass(frozen=True)
class ZeroShotTask:
    """One task: its labels, the template ensemble they are embedded with, which scenes it uses, the truth."""

    name: str
    labels: tuple[str, ...]
    templates: tuple[str, ...]
    single_object: bool
    truth: Callable[[Scene], str]


TASKS: tuple[ZeroShotTask, ...] = (
    ZeroShotTask(
        "shape",
        tuple(f"a {s}" for s in SHAPES),
        ("{}", "a picture of {}", "an image of {}", "there is {}"),
        True,
        lambda sc: f"a {sc.objects[0].shape}",
    ),
    ZeroShotTask("color", tuple(COLORS), _SHAPE_TEMPLATES, True, lambda sc: sc.objects[0].color),
    # beyond world.md's list: captions and prompts name sizes, and an encoder can lose them unnoticed otherwise
    ZeroShotTask("size", tuple(SIZES), _SHAPE_TEMPLATES, True, lambda sc: sc.objects[0].size),
    ZeroShotTask(
        "object",
        tuple(f"a {c} {s}" for c in COLORS for s in SHAPES),
        ("{}", "a picture of {}", "an image of {}", "there is {}"),
        True,
        lambda sc: f"a {sc.objects[0].color} {sc.objects[0].shape}",
    ),
    ZeroShotTask(
        "position", POSITIONS, tuple(f"a {s} in the {{}}" for s in SHAPES), True, lambda sc: sc.objects[0].position
    ),
    ZeroShotTask(
        "count",
        tuple(f"{n} object{'s' if n != 'one' else ''}" for n in NUMBER_WORDS),
        ("{}", "a picture of {}", "an image of {}"),
        False,
        lambda sc: f"{NUMBER_WORDS[len(sc.objects) - 1]} object{'s' if len(sc.objects) > 1 else ''}",
    ),
    ZeroShotTask(
        "background",
        ("white", "black"),
        tuple(f"a {s} on a {{}} background" for s in SHAPES),
        False,
        lambda sc: sc.background,
    ),
)
TASKS_BY_NAME = {t.name: t for t in TASKS}


def task_scenes(task: ZeroShotTask, count: int, seed: int, held_out: bool) -> list[Scene]:
    """Fresh scenes for a task: single-object ones where the task needs them; held-out pairs only if asked."""
    rng = random.Random(f"{seed}/{task.name}/{held_out}")
    mode = "only" if held_out else "exclude"
    return [sample_scene(rng, held_out=mode, num_objects=1 if task.single_object else None) for _ in range(count)]
