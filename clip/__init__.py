"""The shared CLIP/SigLIP encoder: `clip.load(name)` -> Encoder (embeddings, zero-shot classification,
patch tokens for the VLM, token states for the prior)."""

from triptych.core.devices import resolve_device, resolve_dtype
from triptych.core.errors import (
    InvalidImageError,
    InvalidLabelsError,
    InvalidTextError,
    TriptychError,
    WeightsError,
)
from triptych.core.images import load_image, load_images

from .encoder import Encoder, TextStates
from .factory import load
from .templates import IMAGENET, WORLD
from .vision_tower import load_vision_tower, vision_tower_weights

__all__ = [
    "IMAGENET",
    "WORLD",
    "Encoder",
    "InvalidImageError",
    "InvalidLabelsError",
    "InvalidTextError",
    "TextStates",
    "TriptychError",
    "WeightsError",
    "load",
    "load_image",
    "load_images",
    "load_vision_tower",
    "resolve_device",
    "resolve_dtype",
    "vision_tower_weights",
]
