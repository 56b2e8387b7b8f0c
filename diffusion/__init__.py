"""The unCLIP generator: `diffusion.load(name)` -> UnCLIPGenerator (text-to-image, variations, interpolation,
img2img) — a diffusion prior and a latent-diffusion decoder on the shared encoder."""

from .decoder import DecoderStage
from .loading import load, load_kandinsky
from .pipeline import UnCLIPGenerator
from .prior import PriorStage
from .schedulers import SCHEDULERS, make_scheduler
from .settings import GenerationSettings

__all__ = [
    "SCHEDULERS",
    "DecoderStage",
    "GenerationSettings",
    "PriorStage",
    "UnCLIPGenerator",
    "load",
    "load_kandinsky",
    "make_scheduler",
]
