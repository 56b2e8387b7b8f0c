"""Prompts for the generator: whole-scene descriptions to train on, and the GenEval-style test prompts.

A generator prompt describes the whole image: `a red circle` means one object, a red circle. So training pairs
each scene with a prompt that names every object in it (attributes may be left out), and the tests judge a
generated image by exact match (`PromptSpec.satisfied_by` with kinds `objects`, exact `relation`, `count`).
"""

from __future__ import annotations

import random
from dataclasses import replace

from .scene import Scene, as_rng
from .spec import (
    BACKGROUNDS,
    HELD_OUT_PAIRS,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAIN_PAIRS,
    plural,
)
from .text import (
    ObjectSpec,
    PromptSpec,
    caption_form,
    count_phrase,
    finish_prompt,
    join_phrases,
    phrase,
    relation_form,
    spec_of,
)

GENEVAL_CATEGORIES: tuple[str, ...] = (
    "single_object",
    "colors",
    "two_objects",
    "counting",
    "position",
    "attribute_binding",
    "size",
    "absolute_position",
    "background",
)
HELD_OUT_CATEGORIES: tuple[str, ...] = ("colors", "attribute_binding")  # the ones that name (colour, shape) pairs


DESCRIBE_FORMS: tuple[str, ...] = ("caption", "objects", "relation", "count")


def describe_scene(
    scene: Scene, seed_or_rng: int | random.Random | None = None, form: str | None = None
) -> tuple[str, PromptSpec]:
    """A prompt naming every object of the scene (attributes may be left out), with its exact meaning. `form`
    (one of DESCRIBE_FORMS) asks for one form; by default it is drawn (0.3 / 0.4 / 0.15 / 0.15). A relation
    needs two objects: other scenes fall back to the objects form."""
    rng = as_rng(seed_or_rng)
    objs = scene.objects
    if form is None:
        form = rng.choices(DESCRIBE_FORMS, weights=(0.3, 0.4, 0.15, 0.15))[0]
    elif form not in DESCRIBE_FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {DESCRIBE_FORMS}")
    if form == "relation" and len(objs) != 2:
        form = "objects"
    if form == "caption":
        text, spec, background = caption_form(scene, rng)
    elif form == "objects":
        flags = [(rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5) for _ in objs]
        text = join_phrases([phrase(o, size=s, color=c, position=p) for o, (s, c, p) in zip(objs, flags)])
        spec = PromptSpec("objects", tuple(spec_of(o, *f) for o, f in zip(objs, flags)))
        background = rng.random() < 0.3
    elif form == "relation":  # two-object scenes only: the relation names them both
        text, spec = relation_form(objs, rng, color_kept=0.5)
        spec = replace(spec, exact=True)
        background = rng.random() < 0.3
    else:
        text, spec = count_phrase(scene, rng)
        background = rng.random() < 0.3
    return finish_prompt(text, spec, scene, rng, background, canonical=form == "caption", lead_in=0.2)


def _pair(rng: random.Random, held_out: bool) -> tuple[str, str]:
    return rng.choice(sorted(HELD_OUT_PAIRS) if held_out else TRAIN_PAIRS)


def _object(shape: str, color: str | None = None) -> tuple[str, ObjectSpec]:
    return ("a " + (f"{color} " if color else "") + shape), ObjectSpec(shape=shape, color=color)


def geneval_prompt(
    category: str, seed_or_rng: int | random.Random | None = None, held_out: bool = False
) -> tuple[str, PromptSpec]:
    """One test prompt of a category with its exact meaning. `held_out` names a held-out (colour, shape) pair
    (categories in HELD_OUT_CATEGORIES only); otherwise every named pair is a training pair."""
    rng = as_rng(seed_or_rng)
    if held_out and category not in HELD_OUT_CATEGORIES:
        raise ValueError(f"held-out prompts exist for {HELD_OUT_CATEGORIES}, not {category!r}")
    shape = rng.choice(SHAPES)
    if category == "single_object":
        text, spec = _object(shape)
        return text, PromptSpec("objects", (spec,))
    if category == "colors":
        color, shape = _pair(rng, held_out)
        text, spec = _object(shape, color)
        return text, PromptSpec("objects", (spec,))
    if category == "size":
        size = rng.choice(SIZES)
        return f"a {size} {shape}", PromptSpec("objects", (ObjectSpec(shape=shape, size=size),))
    if category == "absolute_position":
        cell = rng.randrange(len(POSITIONS))
        return f"a {shape} in the {POSITIONS[cell]}", PromptSpec("objects", (ObjectSpec(shape=shape, cell=cell),))
    if category == "background":
        bg = rng.choice(tuple(BACKGROUNDS))
        text, spec = _object(shape)
        return f"{text} on a {bg} background", PromptSpec("objects", (spec,), background=bg)
    if category == "counting":
        n = rng.choice((2, 3))
        return f"{NUMBER_WORDS[n - 1]} {plural(shape)}", PromptSpec("count", (ObjectSpec(shape=shape),), count=n)
    if category in ("two_objects", "position"):
        first, second = rng.sample(SHAPES, 2)
        (a_text, a), (b_text, b) = _object(first), _object(second)
        if category == "two_objects":
            return f"{a_text} and {b_text}", PromptSpec("objects", (a, b))
        rel = rng.choice(("to the left of", "to the right of", "above", "below"))
        return f"{a_text} {rel} {b_text}", PromptSpec("relation", (a, b), rel, exact=True)
    if category == "attribute_binding":
        (c1, s1) = _pair(rng, held_out)
        c2, s2 = rng.choice([(c, s) for c, s in TRAIN_PAIRS if c != c1 and s != s1])
        (a_text, a), (b_text, b) = _object(s1, c1), _object(s2, c2)
        if rng.random() < 0.5:
            (a_text, a), (b_text, b) = (b_text, b), (a_text, a)
        return f"{a_text} and {b_text}", PromptSpec("objects", (a, b))
    raise ValueError(f"unknown category {category!r}; expected one of {GENEVAL_CATEGORIES}")
