"""Vision-to-language projector: optional pixel-shuffle token reduction, then a two-layer MLP (LLaVA/nanoVLM)."""

from __future__ import annotations

import math

import torch
from torch import nn


def pixel_shuffle(tokens: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, g*g, D) -> (N, (g/f)^2, D*f*f): merge each f x f block of neighbouring patch tokens into one."""
    if factor == 1:
        return tokens
    n, length, dim = tokens.shape
    g = math.isqrt(length)
    if g * g != length or g % factor:
        raise ValueError(f"pixel shuffle needs a square grid divisible by {factor}, got {length} tokens")
    x = tokens.view(n, g // factor, factor, g // factor, factor, dim)  # (N, gy, fy, gx, fx, D)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (N, gy, gx, fy, fx, D)
    return x.reshape(n, (g // factor) ** 2, factor * factor * dim)


class Projector(nn.Module):
    """Patch tokens (N, L, vision_width) -> image embeddings (N, L / f^2, hidden) in the decoder's space."""

    def __init__(self, vision_width: int, hidden_size: int, shuffle: int = 1) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.fc1 = nn.Linear(vision_width * shuffle * shuffle, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(pixel_shuffle(tokens, self.shuffle))))
