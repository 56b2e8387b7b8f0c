"""Tiny randomly initialised generator parts (and whole folders) for tests, built with the training code."""

from __future__ import annotations

import copy
import json
from pathlib import Path

RECIPE = json.loads((Path(__file__).resolve().parents[1] / "weights/recipes/shapes_diffusion_grid.json").read_text())


def tiny_recipe(encoder: str, steps: int = 2) -> dict:
    """The bundled recipe scaled down to seconds: same layouts, a few channels, a couple of steps per model."""
    recipe = copy.deepcopy(RECIPE)
    recipe["encoder"] = encoder
    recipe["vae"]["model"].update(block_out_channels=[8, 16, 16], norm_num_groups=8, num_vq_embeddings=16)
    recipe["prior"]["model"].update(num_attention_heads=2, attention_head_dim=16, num_layers=1)
    recipe["decoder"]["model"].update(
        block_out_channels=[16, 32], attention_head_dim=8, cross_attention_dim=16, norm_num_groups=8
    )
    for part in ("vae", "prior", "decoder"):
        recipe[part].update(steps=steps, batch_size=4, save_every=1, sample_every=steps, sample_steps=2, warmup_steps=1)
    recipe["prior"]["stats_samples"] = 16
    recipe["decoder"]["grid_samples"] = 16
    return recipe


def pooled(recipe: dict) -> dict:
    """`recipe` in the pooled layout: no grid beside the latents, so the prior is the flat PriorTransformer (the
    cell prior predicts grid cells)."""
    recipe["decoder"]["grid_channels"] = 0
    recipe["prior"]["model"].pop("type", None)
    return recipe
