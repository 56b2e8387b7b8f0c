"""The spatial condition: the encoder's patch-token grid, reduced to a few channels per cell.

The shapes encoder sees a 63 px image as a 3 x 3 grid of patch tokens, one per world cell, so a decoder handed
that grid as a map beside its latents only has to draw each cell's own content; the pooled embedding alone makes
it learn where things go from scratch (measured in issue 14: 48.5 % of objects recovered after 18 CPU minutes
against 15.9 %). The tokens (width W) are reduced by a fixed PCA to G whitened channels, fitted once on training
images, so the prior can predict them beside the pooled embedding as one vector:

    condition = [pooled image embedding (D) | grid (cells * G)]     # (N, D + cells*G)

Stored as `grid/grid_projection.safetensors` in a generator folder (data only, never code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from triptych.core.errors import WeightsError
from triptych.core.weights_files import load_safetensors

if TYPE_CHECKING:
    from triptych.clip import Encoder
    from triptych.core.images import ImageInput

FOLDER, FILE = "grid", "grid_projection.safetensors"
MAX_CELLS, MAX_CHANNELS = 4096, 1024  # far above any encoder's patch grid; a file claiming more is refused


class GridProjection:
    """Patch tokens (N, cells, W) -> whitened principal components (N, cells * G), and back to a (N, G, h, w) map."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, scale: torch.Tensor, cells: int) -> None:
        """mean (W,), components (G, W) orthonormal rows, scale (G,) each component's standard deviation;
        `cells`: patch tokens per image (a square number: 9 for the shapes encoder's 3 x 3)."""
        if not 1 <= cells <= MAX_CELLS or math.isqrt(cells) ** 2 != cells:
            raise WeightsError(f"grid projection: {cells} cells is not a square grid of at most {MAX_CELLS}")
        if components.ndim != 2 or mean.shape != components.shape[1:] or scale.shape != components.shape[:1]:
            raise WeightsError(
                f"grid projection shapes disagree: mean {tuple(mean.shape)}, components {tuple(components.shape)}, "
                f"scale {tuple(scale.shape)}"
            )
        channels, width = components.shape
        if not 1 <= channels <= min(MAX_CHANNELS, width):
            raise WeightsError(f"grid projection: {channels} channels for {width}-wide tokens")
        if not all(bool(torch.isfinite(t).all()) for t in (mean, components, scale)) or bool((scale <= 0).any()):
            raise WeightsError("grid projection holds non-finite values or a non-positive scale")
        self.mean, self.components, self.scale = mean.float(), components.float(), scale.float()
        self.cells = cells

    @property
    def channels(self) -> int:
        """G, channels per cell."""
        return self.components.shape[0]

    @property
    def token_width(self) -> int:
        """W, the patch-token width it reads."""
        return self.components.shape[1]

    @classmethod
    def fit(cls, tokens: torch.Tensor, channels: int) -> GridProjection:
        """PCA of (N, cells, W) patch tokens pooled over cells: the top `channels` directions, whitened."""
        if not 1 <= channels <= tokens.shape[-1]:
            raise ValueError(f"grid_channels must be 1..{tokens.shape[-1]} (the token width), got {channels}")
        flat = tokens.reshape(-1, tokens.shape[-1]).float()  # (N * cells, W)
        mean = flat.mean(0)
        _, s, v = torch.linalg.svd(flat - mean, full_matrices=False)  # v: (W, W) rows are directions
        scale = s[:channels] / math.sqrt(max(1, len(flat) - 1))
        return cls(mean, v[:channels].contiguous(), scale.clamp(min=1e-6), tokens.shape[1])

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, cells, W) -> (N, cells * G), cell-major, about unit variance per channel."""
        if tokens.ndim != 3 or tokens.shape[1:] != (self.cells, self.token_width):
            raise ValueError(
                f"the grid projection reads (N, {self.cells}, {self.token_width}) patch tokens, "
                f"got {tuple(tokens.shape)}"
            )
        t = tokens.float()
        mean, comp, scale = (x.to(t.device) for x in (self.mean, self.components, self.scale))
        return (((t - mean) @ comp.T) / scale).flatten(1)

    @property
    def dim(self) -> int:
        """Length of the flattened grid: cells x G."""
        return self.cells * self.channels

    def to_map(self, flat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, cells * G) -> (N, G, h, w): the g x g grid, each cell's values spread over its part of the map
        (nearest-neighbour upsampling, so a cell's content stays in its cell)."""
        n = flat.shape[0]
        side = math.isqrt(self.cells)
        grid = flat.view(n, side, side, self.channels).permute(0, 3, 1, 2)  # (N, G, g, g)
        return F.interpolate(grid, size=size, mode="nearest")

    def save(self, folder: str | Path) -> None:
        """`<folder>/grid_projection.safetensors` (fp32: it is tiny and fixes every later number)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "components": self.components, "scale": self.scale}
        tensors["cells"] = torch.tensor(self.cells)
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(folder / FILE))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> GridProjection | None:
        """The projection in `<folder>/grid_projection.safetensors`, or None when the folder does not exist
        (a pooled-embedding decoder, as Kandinsky's)."""
        folder = Path(folder)
        if not folder.exists():
            return None
        state = load_safetensors(folder / FILE)
        missing = {"mean", "components", "scale", "cells"} - set(state)
        if missing:
            raise WeightsError(f"{folder / FILE} lacks {sorted(missing)}")
        if state["cells"].numel() != 1 or state["cells"].is_floating_point():
            raise WeightsError(f"{folder / FILE}: 'cells' must be one integer")
        return cls(state["mean"], state["components"], state["scale"], int(state["cells"]))


def image_condition(
    encoder: Encoder, grid: GridProjection | None, images: ImageInput | Sequence[ImageInput]
) -> torch.Tensor:
    """(N, E) what a decoder draws from, for real images: the unnormalised image embedding (E = D), followed
    for the spatial layout by the patch-token grid's projection (E = D + cells x G)."""
    pooled = encoder.encode_image(images, normalize=False).float()  # (N, D)
    if grid is None:
        return pooled
    return torch.cat([pooled, grid.project(encoder.patch_tokens(images)).to(pooled.device)], dim=1)


def zero_condition(encoder: Encoder, grid: GridProjection | None) -> torch.Tensor:
    """(1, E) the all-zero image's condition: unCLIP's "no image", the decoder's unconditional half."""
    pooled = encoder.zero_image_embed()  # (1, D)
    if grid is None:
        return pooled
    return torch.cat([pooled, grid.project(encoder.zero_image_tokens()).to(pooled.device)], dim=1)


def check_against(grid: GridProjection, encoder: Encoder) -> None:
    """WeightsError unless the projection reads this encoder's patch tokens (count and width)."""
    tokens = encoder.zero_image_tokens()  # (1, cells, W)
    if tokens.shape[1:] != (grid.cells, grid.token_width):
        raise WeightsError(
            f"the generator's grid projection reads {grid.cells} patch tokens of width {grid.token_width}; "
            f"this encoder makes {tokens.shape[1]} of width {tokens.shape[2]}"
        )
