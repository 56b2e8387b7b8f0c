"""Generator training batches: world scenes with whole-scene prompts, or your own captioned images."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from triptych.core.datasets import FileSamples, read_samples
from triptych.world import describe_scene, render, sample_scene

Batch = tuple[list[Image.Image], list[str]]  # images, prompts


class WorldImages:
    """Batch k of world scenes, each with a prompt naming every object in it (seeded by part, rank and k)."""

    def __init__(self, seed: int, batch_size: int, part: str, rank: int = 0, side: int = 64) -> None:
        self.seed, self.batch_size, self.part, self.rank, self.side = seed, batch_size, part, rank, side

    def __call__(self, step: int) -> Batch:
        rng = random.Random(f"diffusion/{self.part}/{self.seed}/{self.rank}/{step}")
        scenes = [sample_scene(rng, side=self.side) for _ in range(self.batch_size)]
        return [render(s) for s in scenes], [describe_scene(s, rng)[0] for s in scenes]


class CaptionedImages:
    """Batch k of a folder of images with same-named .txt captions, resized to the training size."""

    def __init__(self, folder: str | Path, seed: int, batch_size: int, side: int = 64) -> None:
        self.files, self.side = FileSamples(read_samples(folder), seed, batch_size), side

    def __call__(self, step: int) -> Batch:
        images, _, captions = self.files(step)
        size = (self.side, self.side)
        return [im.resize(size, Image.Resampling.BICUBIC) if im.size != size else im for im in images], captions
