"""World text: canonical captions, prompt paraphrases, question/answer pairs and the caption parser."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from itertools import permutations
from typing import Literal

from .scene import HeldOut, Scene, SceneObject, as_rng
from .spec import (
    ALL_PAIRS,
    COLORS,
    GRID,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAIN_PAIRS,
    plural,
)

LEAD_INS: tuple[str, ...] = ("a picture of ", "an image of ", "there is ")
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")


def phrase(obj: SceneObject, *, size: bool = True, color: bool = True, position: bool = True) -> str:
    """`a large red circle in the top left`, with any of size/colour/position left out (always `a`, as the
    grammar of world.md writes it: `a orange cross`)."""
    words = ([obj.size] if size else []) + ([obj.color] if color else []) + [obj.shape]
    text = "a " + " ".join(words)
    return f"{text} in the {obj.position}" if position else text


def join_phrases(phrases: list[str]) -> str:
    """`A`, `A and B`, `A, B and C`."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene) -> str:
    """The canonical caption (world.md): objects in reading order, black background mentioned."""
    text = join_phrases([phrase(o) for o in scene.objects])
    return text + (" on a black background" if scene.background == "black" else "")


def relation(a: SceneObject, b: SceneObject) -> str:
    """How `a` stands to `b`: left/right when the column offset is at least the row offset, else above/below."""
    dcol, drow = b.col - a.col, b.row - a.row
    if abs(dcol) >= abs(drow):
        return "to the left of" if dcol > 0 else "to the right of"
    return "above" if drow > 0 else "below"


def count_phrase(scene: Scene, rng: random.Random) -> tuple[str, PromptSpec]:
    """`two red circles`, `three stars`, `two objects`: attributes named only when every object shares them."""
    n = len(scene.objects)
    shapes = {o.shape for o in scene.objects}
    words, said = [NUMBER_WORDS[n - 1]], {}
    name_shape, name_size, name_color = (rng.random() < p for p in (0.6, 0.5, 0.5))  # drawn whatever the scene,
    # so an edited scene described from the same random state draws the same words after this phrase
    if len(shapes) == 1 and name_shape:
        for attr, named in (("size", name_size), ("color", name_color)):
            values = {getattr(o, attr) for o in scene.objects}
            if len(values) == 1 and named:
                said[attr] = next(iter(values))
                words.append(said[attr])
        said["shape"] = next(iter(shapes))
        words.append(said["shape"] if n == 1 else plural(said["shape"]))
    else:
        words.append("object" if n == 1 else "objects")
    return " ".join(words), PromptSpec("count", (ObjectSpec(**said),), count=n)


def groups_phrase(scene: Scene, color: bool) -> tuple[str, PromptSpec]:
    """`two red circles and a blue star` (or `two circles and a star` without colour): the objects counted by
    kind, kinds in reading order of their first object; the meaning is exactly those objects."""
    groups: dict[tuple[str | None, str], int] = {}
    for o in scene.objects:
        key = (o.color if color else None, o.shape)
        groups[key] = groups.get(key, 0) + 1
    parts = []
    for (c, shape), n in groups.items():
        words = ([c] if c else []) + [shape if n == 1 else plural(shape)]
        parts.append(("a " if n == 1 else f"{NUMBER_WORDS[n - 1]} ") + " ".join(words))
    specs = tuple(ObjectSpec(shape=o.shape, color=o.color if color else None) for o in scene.objects)
    return join_phrases(parts), PromptSpec("objects", specs)


@dataclass(frozen=True)
class ObjectSpec:
    """What a prompt says of one object; None = not said."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    cell: int | None = None

    def matches(self, obj: SceneObject) -> bool:
        return all(
            want is None or want == have
            for want, have in (
                (self.shape, obj.shape),
                (self.color, obj.color),
                (self.size, obj.size),
                (self.cell, obj.cell),
            )
        )


@dataclass(frozen=True)
class PromptSpec:
    """The meaning of a prompt, so that whether a scene satisfies it can be decided exactly.

    caption: exactly these objects, in reading order; objects: exactly these objects, in any order; object: some
    object matches; relation: some pair (a, b) matches with `a <relation> b` (and, when `exact`, the scene holds
    only those two); count: exactly `count` objects, each matching objects[0]. background: None = either.
    """

    kind: Literal["caption", "objects", "object", "relation", "count"]
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    count: int | None = None
    background: str | None = None
    exact: bool = False

    def satisfied_by(self, scene: Scene) -> bool:
        """Whether the scene is what the prompt says; a scene holding an object the image parser could not read
        (shape or colour `unknown`) satisfies nothing."""
        if self.background is not None and self.background != scene.background:
            return False
        if not scene.readable:
            return False
        objs = scene.objects
        if self.kind == "caption":
            return len(objs) == len(self.objects) and all(s.matches(o) for s, o in zip(self.objects, objs))
        if self.kind == "objects":
            return len(objs) == len(self.objects) and any(
                all(s.matches(o) for s, o in zip(self.objects, order)) for order in permutations(objs)
            )
        if self.kind == "object":
            return any(self.objects[0].matches(o) for o in objs)
        if self.kind == "relation":
            if self.exact and len(objs) != 2:
                return False
            a_spec, b_spec = self.objects
            return any(
                a is not b and a_spec.matches(a) and b_spec.matches(b) and relation(a, b) == self.relation
                for a in objs
                for b in objs
            )
        return len(objs) == self.count and all(self.objects[0].matches(o) for o in objs)


def spec_of(obj: SceneObject, size: bool, color: bool, position: bool) -> ObjectSpec:
    """What a phrase naming `obj` with these attributes says of it."""
    return ObjectSpec(
        obj.shape, obj.color if color else None, obj.size if size else None, obj.cell if position else None
    )


PROMPT_FORMS: dict[str, float] = {
    "caption": 0.35,
    "object": 0.2,
    "objects": 0.15,
    "relation": 0.15,
    "count": 0.1,
    "groups": 0.05,
}


def random_prompt_spec(
    scene: Scene, seed_or_rng: int | random.Random | None = None, forms: dict[str, float] | None = None
) -> tuple[str, PromptSpec]:
    """A prompt the scene satisfies, drawn from every form world.md lists, with its exact meaning: the canonical
    caption, one object, every object (any attributes left out), a relation, a count of alike objects, or counted
    groups (`two red circles and a blue star`). `forms`: other weights for PROMPT_FORMS' keys."""
    rng = as_rng(seed_or_rng)
    objs = scene.objects
    weights = forms or PROMPT_FORMS
    form = rng.choices(tuple(weights), weights=tuple(weights.values()))[0]
    if form in ("relation", "groups") and len(objs) < 2:
        form = "object"
    if form == "objects":
        flags = [(rng.random() < 0.5, rng.random() < 0.7, rng.random() < 0.5) for _ in objs]
        text = join_phrases([phrase(o, size=s, color=c, position=p) for o, (s, c, p) in zip(objs, flags)])
        spec = PromptSpec("objects", tuple(spec_of(o, *f) for o, f in zip(objs, flags)))
        return finish_prompt(text, spec, scene, rng, rng.random() < 0.3, canonical=False, lead_in=0.25)
    if form == "groups":
        text, spec = groups_phrase(scene, color=rng.random() < 0.7)
        return finish_prompt(text, spec, scene, rng, rng.random() < 0.3, canonical=False, lead_in=0.25)
    if form == "caption":
        text, spec, background = caption_form(scene, rng)
    elif form == "object":
        obj, position = rng.choice(objs), rng.random() < 0.5
        size, color = rng.random() < 0.5, rng.random() < 0.7
        text = phrase(obj, size=size, color=color, position=position)
        spec = PromptSpec("object", (spec_of(obj, size, color, position),))
        background = rng.random() < 0.3
    elif form == "relation":
        text, spec = relation_form(objs, rng, color_kept=0.7)
        background = rng.random() < 0.3
    else:
        text, spec = count_phrase(scene, rng)
        background = rng.random() < 0.3
    return finish_prompt(text, spec, scene, rng, background, canonical=form == "caption", lead_in=0.25)


def caption_form(scene: Scene, rng: random.Random) -> tuple[str, PromptSpec, bool]:
    """The canonical caption as a prompt, and whether to name the background (always when black)."""
    text = join_phrases([phrase(o) for o in scene.objects])
    spec = PromptSpec("caption", tuple(spec_of(o, True, True, True) for o in scene.objects))
    return text, spec, scene.background == "black" or rng.random() < 0.2


def relation_form(objs: tuple[SceneObject, ...], rng: random.Random, color_kept: float) -> tuple[str, PromptSpec]:
    """`<a> <relation> <b>` for two random objects, size named half the time, colour with p = color_kept."""
    a, b = rng.sample(objs, 2)
    flags = [(rng.random() < 0.5, rng.random() < color_kept) for _ in range(2)]
    rel = relation(a, b)
    text = (
        f"{phrase(a, size=flags[0][0], color=flags[0][1], position=False)} {rel} "
        f"{phrase(b, size=flags[1][0], color=flags[1][1], position=False)}"
    )
    return text, PromptSpec("relation", (spec_of(a, *flags[0], False), spec_of(b, *flags[1], False)), rel)


def finish_prompt(
    text: str, spec: PromptSpec, scene: Scene, rng: random.Random, background: bool, canonical: bool, lead_in: float
) -> tuple[str, PromptSpec]:
    """Append the scene's background when asked (a canonical caption that does not name it means white), then
    a lead-in (`a picture of ...`) with probability `lead_in`."""
    if background:
        text += f" on a {scene.background} background"
        spec = replace(spec, background=scene.background)
    elif canonical:
        spec = replace(spec, background="white")
    if rng.random() < lead_in:
        text = rng.choice(LEAD_INS) + text
    return text, spec


def random_prompt(scene: Scene, seed_or_rng: int | random.Random | None = None) -> str:
    """A prompt the scene satisfies, drawn from every form world.md lists (for training the text side)."""
    return random_prompt_spec(scene, seed_or_rng)[0]


# ---------------------------------------------------------------- questions
QUESTION_TYPES: tuple[str, ...] = ("count", "color", "shape", "position", "exists", "background")


def question_answers(
    scene: Scene, qtype: str, rng: random.Random, held_out: HeldOut = "exclude", occupied: float | None = None
) -> tuple[str, str]:
    """One (question, answer) pair of a type; raises LookupError when the scene allows none of that type.

    Position questions ask about a uniformly drawn cell (most are empty: "nothing"), unless `occupied` is given:
    then an occupied cell with that probability (training uses it so "nothing" does not swamp the answers).
    """
    objs = scene.objects
    if qtype == "count":
        return "how many objects are there?", NUMBER_WORDS[len(objs) - 1]
    if qtype == "background":
        return "what color is the background?", scene.background
    if qtype == "color":
        unique = [o for o in objs if sum(p.shape == o.shape for p in objs) == 1]
        if not unique:
            raise LookupError("no shape is unique in this scene")
        o = rng.choice(unique)
        return f"what color is the {o.shape}?", o.color
    if qtype == "shape":
        unique = [o for o in objs if sum(p.color == o.color for p in objs) == 1]
        if not unique:
            raise LookupError("no colour is unique in this scene")
        o = rng.choice(unique)
        return f"what shape is the {o.color} object?", o.shape
    if qtype == "position":
        pick_occupied = occupied is not None and rng.random() < occupied
        cell = rng.choice(objs).cell if pick_occupied else rng.randrange(GRID * GRID)
        hit = [o for o in objs if o.cell == cell]
        answer = phrase(hit[0], position=False) if hit else "nothing"
        return f"what is in the {POSITIONS[cell]}?", answer
    if qtype == "exists":
        present = {(o.color, o.shape) for o in objs}
        if rng.random() < 0.5:
            color, shape = rng.choice(sorted(present))
        else:
            pool = {"exclude": TRAIN_PAIRS, "include": ALL_PAIRS, "only": ALL_PAIRS}[held_out]
            color, shape = rng.choice([p for p in pool if p not in present])
        return f"is there a {color} {shape}?", "yes" if (color, shape) in present else "no"
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


def random_question(
    scene: Scene,
    seed_or_rng: int | random.Random | None = None,
    held_out: HeldOut = "exclude",
    occupied: float | None = None,
) -> tuple[str, str, str]:
    """(question type, question, answer), the type uniform over those the scene allows (`occupied`: see
    question_answers)."""
    rng = as_rng(seed_or_rng)
    types = list(QUESTION_TYPES)
    rng.shuffle(types)
    for qtype in types:
        try:
            return (qtype, *question_answers(scene, qtype, rng, held_out, occupied))
        except LookupError:
            continue
    raise AssertionError("count questions always apply")  # pragma: no cover


# ---------------------------------------------------------------- caption parser
_PHRASE = re.compile(
    r"a (?P<size>{}) (?P<color>{}) (?P<shape>{}) in the (?P<position>{})".format(
        "|".join(SIZES), "|".join(COLORS), "|".join(SHAPES), "|".join(POSITIONS)
    )
)


class CaptionParseError(ValueError):
    """A caption that does not follow the canonical grammar."""


def parse_caption(text: str) -> Scene:
    """Parse a canonical caption back into a Scene (jitter 0); raises CaptionParseError when malformed."""
    body = text.strip()
    background = "white"
    if body.endswith(" on a black background"):
        body, background = body[: -len(" on a black background")], "black"
    parts = body.split(" and ")
    if len(parts) == 2 and ", " in parts[0]:
        parts = parts[0].split(", ") + [parts[1]]
    objects = []
    for part in parts:
        m = _PHRASE.fullmatch(part)
        if not m:
            raise CaptionParseError(f"not a canonical object phrase: {part!r} in {text!r}")
        cell = POSITIONS.index(m["position"])
        objects.append(SceneObject(m["size"], m["color"], m["shape"], cell))
    if not 1 <= len(objects) <= 3:
        raise CaptionParseError(f"a caption names 1 to 3 objects, got {len(objects)} in {text!r}")
    try:
        return Scene(tuple(objects), background)
    except ValueError as err:
        raise CaptionParseError(f"{err} in {text!r}") from err


def caption_objects(text: str) -> set[tuple[str, str, str, int]]:
    """(size, colour, shape, cell) of every well-formed object phrase in a text, even a malformed caption:
    for object-level F1."""
    return {(m["size"], m["color"], m["shape"], POSITIONS.index(m["position"])) for m in _PHRASE.finditer(text)}
