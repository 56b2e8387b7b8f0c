"""Writing generator folders: our layout, which is diffusers' per-model layout (plus, in the pooled layout, a
`model_index.json`; the spatial layout adds `grid/` instead).

A pooled-embedding generator's decoder half (`unet/`, `movq/`, `scheduler/`) is exactly Kandinsky 2.2's decoder,
so its folder carries the `model_index.json` that lets `DiffusionPipeline.from_pretrained(folder)` open it as a
`KandinskyV22Pipeline` (which then takes image embeddings; it has no text side). The prior half needs our text
encoder (open_clip), which no diffusers pipeline loads, so the index does not name it. A spatial-layout generator
(`grid/`) gets no index: its UNet reads the patch-token grid beside its latents, which KandinskyV22Pipeline cannot
supply, and a pipeline that loads but draws noise would be worse than an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import diffusers

from triptych.core.checkpoint import export_folder
from triptych.core.model_card import current_card, write_card
from triptych.core.resolve import GENERATOR_CONFIG

from .grid import FOLDER as GRID_FOLDER

if TYPE_CHECKING:
    from .decoder import DecoderStage
    from .prior import PriorStage
    from .settings import GenerationSettings

MODEL_INDEX = "model_index.json"
DECODER_PIPELINE = "KandinskyV22Pipeline"


def model_index(scheduler_class: str) -> dict:
    """The diffusers pipeline index of a pooled-layout generator folder: its decoder half as KandinskyV22Pipeline."""
    return {
        "_class_name": DECODER_PIPELINE,
        "_diffusers_version": diffusers.__version__,
        "movq": ["diffusers", "VQModel"],
        "scheduler": ["diffusers", scheduler_class],
        "unet": ["diffusers", "UNet2DConditionModel"],
    }


def write_model_index(folder: str | Path) -> Path | None:
    """Write `folder/model_index.json` for a pooled-layout generator folder (none, and any old one removed, for
    the spatial layout). Returns the path written, or None."""
    folder = Path(folder)
    path = folder / MODEL_INDEX
    if (folder / GRID_FOLDER).exists():
        path.unlink(missing_ok=True)
        return None
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    path.write_text(json.dumps(model_index(scheduler), indent=1) + "\n")
    return path


def save_generator(
    folder: str | Path,
    prior: PriorStage,
    decoder: DecoderStage,
    *,
    encoder: str,
    image_size: int,
    defaults: GenerationSettings,
    scheduler_config: dict,
    source: str,
) -> Path:
    """Write a generator (`UnCLIPGenerator.save_pretrained`) as a folder `diffusion.load` reads back (and
    diffusers, for the decoder half): every model as safetensors in its current dtype, the decoder's scheduler as
    loaded (`scheduler_config`, not as a call last switched it), generator.json (`encoder`: the name to load the
    encoder by), a model card naming `source`, a sha256 manifest. Written whole: a crash leaves the old folder or
    the new one."""
    folder = Path(folder)
    config = {
        "encoder": encoder,
        "image_size": image_size,
        "prior_normalize_text": prior.normalize_text,
        "defaults": {k: v for k, v in asdict(defaults).items() if k != "seed"},
    }
    with export_folder(folder) as tmp:
        prior.prior.save_pretrained(tmp / "prior", safe_serialization=True)
        decoder.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        decoder.movq.save_pretrained(tmp / "movq", safe_serialization=True)
        prior.scheduler.save_pretrained(tmp / "prior_scheduler")
        (tmp / "scheduler").mkdir()
        scheduler = json.dumps(scheduler_config, indent=1, default=list)
        (tmp / "scheduler" / "scheduler_config.json").write_text(scheduler + "\n")
        if decoder.grid is not None:
            decoder.grid.save(tmp / GRID_FOLDER)
        (tmp / GENERATOR_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        write_model_index(tmp)
        summary = f"An unCLIP text-to-image generator saved by triptych from {source}."
        write_card(
            tmp, card_part(decoder.grid is not None), name=folder.name, summary=summary, keep_from=current_card(folder)
        )
    return folder


def card_part(spatial: bool) -> str:
    """The model card kind of a generator folder: a spatial-layout one (grid/) is triptych's alone, a pooled one
    also opens in diffusers (core/model_card.py)."""
    return "diffusion-grid" if spatial else "diffusion"
