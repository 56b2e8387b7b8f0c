"""What the VLM reads from an image: the encoder's patch tokens of one layer, after the VLM's own preprocessing
(LLaVA-1.5 pads every image to a square of the encoder's mean colour, so nothing is cropped away)."""

from __future__ import annotations

import torch
from PIL import Image

from triptych import clip

from .model import VLMConfig


def pad_to_square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """The image centred on a square canvas of `colour` (LLaVA's expand2square; left/top get the smaller half)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_colour(encoder: clip.Encoder) -> tuple[int, int, int]:
    """The encoder's normalisation mean as 0-255 RGB, truncated as transformers' LLaVA processor does."""
    r, g, b = (int(v * 255) for v in encoder.image_mean)
    return r, g, b


def image_tokens(encoder: clip.Encoder, images: list[Image.Image], cfg: VLMConfig) -> torch.Tensor:
    """(B, L, width) patch tokens of layer `cfg.vision_layer` for RGB images, as the VLM was trained to read them."""
    if cfg.pad_to_square:
        colour = mean_colour(encoder)
        images = [pad_to_square(image, colour) for image in images]
    return encoder.patch_tokens(images, layer=cfg.vision_layer, normalize=cfg.vision_final_norm)
