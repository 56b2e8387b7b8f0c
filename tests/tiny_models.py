"""Tiny randomly initialised encoders in open_clip's local-dir format, built with the training code itself."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from triptych.clip.train import build_model, export_local_dir, write_tokenizer

RECIPE = json.loads((Path(__file__).resolve().parents[1] / "weights/recipes/shapes_clip.json").read_text())


def tiny_recipe(loss: str = "clip", steps: int = 4, batch_size: int = 8, binding_steps: int = 0) -> dict:
    """The bundled recipe at test size; the binding stages (each `binding_steps` long) only when it is given."""
    recipe = copy.deepcopy(RECIPE)
    stages = {stage: recipe.pop(stage) for stage in ("binding", "binding_mix")}
    if binding_steps:
        for stage, cfg in stages.items():
            recipe[stage] = {**cfg, "steps": binding_steps, "batch_size": batch_size, "warmup_steps": 1}
            recipe[stage]["save_every"] = 2
    recipe["model_cfg"]["embed_dim"] = 32
    recipe["model_cfg"]["vision_cfg"].update(width=64, layers=1, head_width=32)
    recipe["model_cfg"]["text_cfg"].update(width=32, layers=1, heads=2)
    recipe["train"].update(steps=steps, batch_size=batch_size, loss=loss, warmup_steps=2, save_every=2)
    return recipe


def make_tiny_encoder_dir(folder: Path, loss: str = "clip", timm_tower: str | None = None) -> Path:
    """A random tiny CLIP (or SigLIP with loss='siglip'; or a timm vision tower) saved as a local-dir."""
    recipe = tiny_recipe(loss)
    if timm_tower:
        recipe["train"]["pos_embed_scale"] = 1.0
        recipe["model_cfg"]["vision_cfg"] = {
            "timm_model_name": timm_tower,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": 224,
        }
    tok_dir = folder / "_tok"
    write_tokenizer(recipe, tok_dir)
    export_local_dir(build_model(recipe), recipe, tok_dir, folder / "model", {"note": "random init for tests"})
    return folder / "model"
