"""Every word the world's text uses, for small word-level tokenizers."""

from __future__ import annotations

from .spec import BACKGROUNDS, COLORS, NUMBER_WORDS, POSITIONS, SHAPES, SIZES, plural
from .text import LEAD_INS, RELATIONS

_GRAMMAR = "a and in the on of background object objects how many are there what color is shape nothing yes no"


def world_words() -> list[str]:
    """Sorted, deduplicated words of captions, prompts, questions and answers (plus `,` and `?`)."""
    words = set(_GRAMMAR.split()) | {",", "?"}
    for group in (SIZES, COLORS, SHAPES, BACKGROUNDS, NUMBER_WORDS, POSITIONS, LEAD_INS, RELATIONS):
        for item in group:
            words.update(item.split())
    words.update(plural(s) for s in SHAPES)
    return sorted(words)
