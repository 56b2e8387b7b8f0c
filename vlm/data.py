"""VLM training samples from the world, rendered on the fly and addressed by step (see StepBatches). Your own
data comes through triptych.core.datasets (captioned folders, JSONL)."""

from __future__ import annotations

import random

from PIL import Image
from tokenizers import Tokenizer

from triptych.core.wordlevel import build_word_tokenizer
from triptych.world import caption, random_question, render, sample_scene
from triptych.world.vocab import world_words

from .tokenizer import CAPTION_PROMPT, SEP

Batch = tuple[list[Image.Image], list[str], list[str]]  # images, prompts, answers


class WorldSamples:
    """Batch k of world scenes: a caption task with probability `caption_fraction`, else a random question
    (position questions ask about an occupied cell with probability `occupied`)."""

    def __init__(
        self, seed: int, batch_size: int, caption_fraction: float = 0.5, rank: int = 0, occupied: float | None = None
    ) -> None:
        self.seed, self.batch_size, self.caption_fraction, self.rank = seed, batch_size, caption_fraction, rank
        self.occupied = occupied

    def __call__(self, step: int) -> Batch:
        rng = random.Random(f"vlm/{self.seed}/{self.rank}/{step}")
        images, prompts, answers = [], [], []
        for _ in range(self.batch_size):
            scene = sample_scene(rng)
            images.append(render(scene))
            if rng.random() < self.caption_fraction:
                prompts.append(CAPTION_PROMPT)
                answers.append(caption(scene))
            else:
                _, question, answer = random_question(scene, rng, occupied=self.occupied)
                prompts.append(question)
                answers.append(answer)
        return images, prompts, answers


def build_world_tokenizer() -> Tokenizer:
    """Word-level tokenizer over the world's text plus the VLM's separator and caption prompt."""
    return build_word_tokenizer(world_words() + [CAPTION_PROMPT], extra_specials=(SEP,))
