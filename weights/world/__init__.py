"""The shapes world (contract v1, ../shared/world.md): sampler, renderer, text, parsers and datasets."""

from .dataset import ShapesDataset, export_folder
from .parse_image import parse_image
from .render import render, render_array
from .scene import Scene, SceneObject, sample_scene
from .spec import (
    ALL_PAIRS,
    BACKGROUNDS,
    COLORS,
    DEFAULT_SIDE,
    HELD_OUT_PAIRS,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAIN_PAIRS,
    WORLD_VERSION,
    plural,
)
from .text import (
    QUESTION_TYPES,
    CaptionParseError,
    ObjectSpec,
    PromptSpec,
    caption,
    parse_caption,
    phrase,
    question_answers,
    random_prompt,
    random_prompt_spec,
    random_question,
    relation,
)

__all__ = [
    "ALL_PAIRS",
    "BACKGROUNDS",
    "COLORS",
    "DEFAULT_SIDE",
    "HELD_OUT_PAIRS",
    "NUMBER_WORDS",
    "POSITIONS",
    "QUESTION_TYPES",
    "SHAPES",
    "SIZES",
    "TRAIN_PAIRS",
    "WORLD_VERSION",
    "CaptionParseError",
    "Scene",
    "SceneObject",
    "ShapesDataset",
    "PromptSpec",
    "ObjectSpec",
    "random_prompt_spec",
    "caption",
    "export_folder",
    "parse_caption",
    "parse_image",
    "phrase",
    "plural",
    "question_answers",
    "random_prompt",
    "random_question",
    "relation",
    "render",
    "render_array",
    "sample_scene",
]
