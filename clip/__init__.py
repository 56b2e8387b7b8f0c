"""The shared CLIP/SigLIP encoder: `clip.load(name)` -> Encoder (embeddings, zero-shot classification,
patch tokens for the VLM, token states for the prior)."""

from .devices import resolve_device, resolve_dtype
from .encoder import Encoder, TextStates
from .errors import (
    InvalidImageError,
    InvalidLabelsError,
    InvalidTextError,
    TriptychError,
    WeightsError,
)
from .factory import load
from .images import load_image, load_images
from .templates import IMAGENET, WORLD

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
    "resolve_device",
    "resolve_dtype",
]
