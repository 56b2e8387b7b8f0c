"""Minimal edits (ARO / Winoground style): a true description against the same words in another order.

Two uses, one source of truth:
- `probe(kind, rng)`: a scene with its true caption and a minimal edit of it, for the compositional zero-shot
  scores of world.md (colours swapped between two objects, a relation inverted, counts swapped between groups);
- `with_hard_negative(scene, describe, rng)`: for training (NegCLIP's recipe), a prompt the scene does NOT satisfy that
  is drawn with the very same random choices as its true prompt, from an edited copy of the scene (colours,
  shapes, sizes or cells of two objects swapped, an object moved to another group): the two texts differ only
  where the edit does, so the text tower must read which word goes with which.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from .scene import Scene, SceneObject, as_rng
from .spec import DEFAULT_SIDE, GRID, HELD_OUT_PAIRS, NUMBER_WORDS, SIZES, TRAIN_PAIRS, max_jitter, plural
from .text import ObjectSpec, PromptSpec, relation

EDIT_KINDS: tuple[str, ...] = ("attribute_swap", "relation_inversion", "count_swap")
INVERSE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}

Describe = Callable[[Scene, random.Random], tuple[str, PromptSpec]]


@dataclass(frozen=True)
class Probe:
    """A scene, its true caption and the minimal edit the scene must score lower, each text with its meaning (so
    a training batch can tell which other scenes a probe's text is true of)."""

    kind: str
    scene: Scene
    true: str
    edit: str
    true_spec: PromptSpec
    edit_spec: PromptSpec


def probe(
    kind: str, seed_or_rng: int | random.Random | None = None, held_out: bool = False, say_sizes: bool = False
) -> Probe:
    """One compositional probe of `kind` (EDIT_KINDS) on a fresh scene. Objects have distinct colours and shapes;
    in-distribution, every (colour, shape) pair the true and edited texts name is a training pair; `held_out`: the
    scene holds a held-out pair. The scores use world.md's texts, which leave sizes unsaid; `say_sizes` (training)
    names each object's size too ("a small red circle ..."; a counted group is drawn one size), so probe batches do
    not teach the encoder that size does not matter."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    rng = as_rng(seed_or_rng)
    (c1, s1), (c2, s2) = _two_pairs(rng, held_out)
    background = rng.choice(("white", "black"))
    suffix = " on a black background" if background == "black" else ""
    said = "black" if background == "black" else None  # what the texts say of it: a white one goes unnamed (either)

    def words(obj: SceneObject, color: str | None = None, shape: str | None = None) -> str:
        """The object's words (colour / shape replaced where an edit says so), its size first when said."""
        return " ".join(w for w in (obj.size if say_sizes else None, color or obj.color, shape or obj.shape) if w)

    def spec(obj: SceneObject, color: str | None = None, shape: str | None = None) -> ObjectSpec:
        return ObjectSpec(shape or obj.shape, color or obj.color, obj.size if say_sizes else None)

    if kind == "count_swap":
        cells = rng.sample(range(GRID * GRID), 3)
        twin = _object(rng, c1, s1, cells[0])
        second = _object(rng, c1, s1, cells[1])
        objs = [twin, replace(second, size=twin.size) if say_sizes else second, _object(rng, c2, s2, cells[2])]
        one = objs[2]
        pair, single = f"{NUMBER_WORDS[1]} {words(twin, shape=plural(s1))}", f"a {words(one)}"
        swapped_single, swapped_pair = f"a {words(twin)}", f"{NUMBER_WORDS[1]} {words(one, shape=plural(s2))}"
        if rng.random() < 0.5:
            true, edit = f"{pair} and {single}", f"{swapped_single} and {swapped_pair}"
        else:
            true, edit = f"{single} and {pair}", f"{swapped_pair} and {swapped_single}"
        true_spec = PromptSpec("objects", (spec(twin), spec(twin), spec(one)), background=said)
        edit_spec = PromptSpec("objects", (spec(twin), spec(one), spec(one)), background=said)
        scene = Scene(tuple(objs), background)
        return Probe(kind, scene, true + suffix, edit + suffix, true_spec, edit_spec)
    if kind == "attribute_swap":
        cells = rng.sample(range(GRID * GRID), 2)
        scene = Scene((_object(rng, c1, s1, cells[0]), _object(rng, c2, s2, cells[1])), background)
        a, b = scene.objects
        true = f"a {words(a)} and a {words(b)}"
        edit = f"a {words(a, color=b.color)} and a {words(b, color=a.color)}"
        true_spec = PromptSpec("objects", (spec(a), spec(b)), background=said)
        edit_spec = PromptSpec("objects", (spec(a, color=b.color), spec(b, color=a.color)), background=said)
        return Probe(kind, scene, true + suffix, edit + suffix, true_spec, edit_spec)
    line = rng.randrange(GRID)  # relation_inversion: a pair in one row or one column
    first, second = sorted(rng.sample(range(GRID), 2))
    if rng.random() < 0.5:
        cells = [line * GRID + first, line * GRID + second]  # one row
    else:
        cells = [first * GRID + line, second * GRID + line]  # one column
    scene = Scene((_object(rng, c1, s1, cells[0]), _object(rng, c2, s2, cells[1])), background)
    a, b = rng.sample(scene.objects, 2)
    rel = relation(a, b)
    true = f"a {words(a)} {rel} a {words(b)}"
    edit = f"a {words(a)} {INVERSE[rel]} a {words(b)}"
    named = (spec(a), spec(b))
    true_spec = PromptSpec("relation", named, rel, background=said)
    edit_spec = PromptSpec("relation", named, INVERSE[rel], background=said)
    return Probe(kind, scene, true + suffix, edit + suffix, true_spec, edit_spec)


def _two_pairs(rng: random.Random, held_out: bool) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two (colour, shape) pairs with distinct colours and shapes. In-distribution, the swapped pairs
    (c2, s1) and (c1, s2) are training pairs too, so the edit names no held-out pair."""
    train = set(TRAIN_PAIRS)
    while True:
        first = rng.choice(sorted(HELD_OUT_PAIRS)) if held_out else rng.choice(TRAIN_PAIRS)
        second = rng.choice(TRAIN_PAIRS)
        (c1, s1), (c2, s2) = first, second
        if c1 == c2 or s1 == s2:
            continue
        if not held_out and not {(c2, s1), (c1, s2)} <= train:
            continue
        pairs = [first, second]
        rng.shuffle(pairs)
        return pairs[0], pairs[1]


def _object(rng: random.Random, color: str, shape: str, cell: int) -> SceneObject:
    j = max_jitter(DEFAULT_SIDE)
    return SceneObject(rng.choice(SIZES), color, shape, cell, rng.randint(-j, j), rng.randint(-j, j))


# ---------------------------------------------------------------- training: hard negatives
def edited_scenes(scene: Scene, rng: random.Random) -> list[Scene]:
    """Minimal edits of a scene, grouped by kind, the kinds in random order (so each kind comes first equally
    often, whatever the number of its instances): attributes (colours, shapes or sizes of two objects swapped; a lone
    object's colour or shape changed), positions (two objects' cells swapped; the scene mirrored left-right or
    top-bottom: relations invert), counts (one object moved to another's group). Each keeps the scene valid and
    names training pairs only; some may equal the original (equal attributes, a symmetric layout)."""
    objs = list(scene.objects)
    kinds: dict[str, list[Scene]] = {"attribute": [], "position": [], "count": []}

    def edit(kind: str, objects: list[SceneObject]) -> None:
        kinds[kind].append(replace(scene, objects=tuple(objects)))

    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            for attr in ("color", "shape", "size"):
                swapped = objs.copy()
                swapped[i], swapped[j] = replace(a, **{attr: getattr(b, attr)}), replace(b, **{attr: getattr(a, attr)})
                edit("attribute", swapped)
            moved = objs.copy()
            moved[i], moved[j] = replace(a, cell=b.cell), replace(b, cell=a.cell)
            edit("position", moved)
            regrouped = objs.copy()
            regrouped[i] = replace(a, color=b.color, shape=b.shape)  # a joins b's group
            edit("count", regrouped)
    if len(objs) == 1:
        (a,) = objs
        colors = [c for c, s in TRAIN_PAIRS if s == a.shape and c != a.color]
        shapes = [s for c, s in TRAIN_PAIRS if c == a.color and s != a.shape]
        edit("attribute", [replace(a, color=rng.choice(colors))])
        edit("attribute", [replace(a, shape=rng.choice(shapes))])
    for flip in (_mirror_columns, _mirror_rows):
        edit("position", [replace(o, cell=flip(o.cell)) for o in objs])
    train = set(TRAIN_PAIRS)  # held-out pairs never appear in training text, negatives included
    order = list(kinds)
    rng.shuffle(order)
    edits = []
    for kind in order:
        group = [e for e in kinds[kind] if all((o.color, o.shape) in train for o in e.objects)]
        rng.shuffle(group)
        edits += group
    return edits


def _mirror_columns(cell: int) -> int:
    return cell // GRID * GRID + (GRID - 1 - cell % GRID)


def _mirror_rows(cell: int) -> int:
    return (GRID - 1 - cell // GRID) * GRID + cell % GRID


def with_hard_negative(
    scene: Scene, describe: Describe, rng: random.Random
) -> tuple[tuple[str, PromptSpec], tuple[str, PromptSpec] | None]:
    """(a prompt `describe` draws for `scene`, a prompt false of `scene` drawn with the very same random choices
    from an edited copy of the scene, or None when no edit changes what the prompt says)."""
    start = rng.getstate()
    positive = describe(scene, rng)
    edit_rng = random.Random(rng.random())
    after = rng.getstate()
    text, spec = positive
    if spec.kind == "relation" and edit_rng.random() < 0.5:  # the relation word inverted: the most minimal edit
        inverted = replace(spec, relation=INVERSE[spec.relation])
        if not inverted.satisfied_by(scene):
            return positive, (text.replace(f" {spec.relation} ", f" {INVERSE[spec.relation]} ", 1), inverted)
    for edited in edited_scenes(scene, edit_rng):
        rng.setstate(start)
        text, spec = describe(edited, rng)
        if text != positive[0] and not spec.satisfied_by(scene):
            rng.setstate(after)
            return positive, (text, spec)
    rng.setstate(after)
    return positive, None
