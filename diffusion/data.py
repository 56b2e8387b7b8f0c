"""Generator training batches: world scenes with whole-scene prompts, or your own captioned images."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

from PIL import Image

from triptych.core.datasets import FileSamples, read_samples
from triptych.world import SHAPES, TRAIN_PAIRS, Scene, describe_scene, render, sample_scene

Batch = tuple[list[Image.Image], list[str]]  # images, prompts
FOCUS_FORMS: tuple[str, ...] = ("count", "relation")  # prompt forms a recipe's `focus` may draw more often


def same_shape_scene(rng: random.Random, side: int) -> Scene:
    """Two or three objects of one shape, in one colour half the time (colours from the shape's training pairs):
    what count prompts ("three stars", "two red circles") describe, and what the world's sampler draws rarely
    (one two-object scene in 6 and one three-object scene in 36 hold a single shape)."""
    scene = sample_scene(rng, num_objects=rng.choice((2, 3)), side=side)
    shape = rng.choice(SHAPES)
    colors = [c for c, s in TRAIN_PAIRS if s == shape]
    shared = rng.choice(colors) if rng.random() < 0.5 else None
    objects = tuple(replace(o, shape=shape, color=shared or rng.choice(colors)) for o in scene.objects)
    return replace(scene, objects=objects)


def check_focus(focus: dict[str, float] | None) -> dict[str, float]:
    """A recipe's `focus` ({form: probability}, forms from FOCUS_FORMS, total at most 1) without its zero
    entries (all zero is no focus: the world's batches), or ValueError."""
    focus = dict(focus or {})
    unknown = sorted(set(focus) - set(FOCUS_FORMS))
    if unknown:
        raise ValueError(f"focus: unknown prompt forms {unknown}; expected some of {FOCUS_FORMS}")
    shares = focus.values()
    numbers = all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0 for p in shares
    )
    if not numbers or sum(shares) > 1:
        raise ValueError(f"focus: probabilities must be finite numbers >= 0 that sum to at most 1; got {focus}")
    return {form: p for form, p in focus.items() if p > 0}


class WorldImages:
    """Batch k of world scenes, each with a prompt naming every object in it (seeded by part, rank and k).

    `focus` ({"count": p, "relation": q}) draws that share of the batch as scenes built for one prompt form and
    described in it: same-shape groups with a count prompt (which names the shape 60 % of the time, as the
    world's count phrase does: `two objects` otherwise), two-object scenes with a relation. The world's own mix
    holds few of either (count prompts naming a shape of two or three objects ~0.6 %, relations ~5 %), and they
    are the prompts a prior learns last. Without `focus` the batches are exactly the world's mix."""

    def __init__(
        self,
        seed: int,
        batch_size: int,
        part: str,
        rank: int = 0,
        side: int = 64,
        focus: dict[str, float] | None = None,
    ) -> None:
        self.seed, self.batch_size, self.part, self.rank, self.side = seed, batch_size, part, rank, side
        self.focus = check_focus(focus)

    def __call__(self, step: int) -> Batch:
        rng = random.Random(f"diffusion/{self.part}/{self.seed}/{self.rank}/{step}")
        if not self.focus:  # the world's mix, drawn as it always was (earlier runs resume on the same batches)
            scenes = [sample_scene(rng, side=self.side) for _ in range(self.batch_size)]
            return [render(s) for s in scenes], [describe_scene(s, rng)[0] for s in scenes]
        drawn = [self._draw(rng) for _ in range(self.batch_size)]
        return [render(s) for s, _ in drawn], [text for _, text in drawn]

    def _draw(self, rng: random.Random) -> tuple[Scene, str]:
        """One scene with its prompt: a focused form with its probability, else the world's mix."""
        r = rng.random()
        for form, p in self.focus.items():
            if r < p:
                if form == "count":
                    scene = same_shape_scene(rng, self.side)
                else:
                    scene = sample_scene(rng, num_objects=2, side=self.side)
                return scene, describe_scene(scene, rng, form=form)[0]
            r -= p
        scene = sample_scene(rng, side=self.side)
        return scene, describe_scene(scene, rng)[0]


class CaptionedImages:
    """Batch k of a folder of images with same-named .txt captions, resized to the training size."""

    def __init__(self, folder: str | Path, seed: int, batch_size: int, side: int = 64) -> None:
        self.files, self.side = FileSamples(read_samples(folder), seed, batch_size), side

    def __call__(self, step: int) -> Batch:
        images, _, captions = self.files(step)
        size = (self.side, self.side)
        return [im.resize(size, Image.Resampling.BICUBIC) if im.size != size else im for im in images], captions
