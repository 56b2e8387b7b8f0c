"""An encoder made of a transformers CLIP vision tower alone: what a VLM checkpoint that carries its own tower
(LLaVA) reads patch tokens from when that tower is not the shared encoder's. No text tower, no projection."""

from __future__ import annotations

from pathlib import Path

import torch

from triptych.core.devices import resolve_device, resolve_dtype
from triptych.core.errors import WeightsError
from triptych.core.placement import Placement
from triptych.core.weights_files import weights_errors

from .encoder import Encoder
from .hf_bridge import build_vision_tower, convert_vision_tower, processor_transform


class TowerOnly(torch.nn.Module):
    """Holds a vision tower where the Encoder expects a CLIP: patch tokens only."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual


def vision_tower_weights(state: dict[str, torch.Tensor], vision: dict, where: Path) -> dict[str, torch.Tensor]:
    """HF CLIP vision weights (`vision_model.*`) -> open_clip's `visual.*` names, no projection."""
    try:
        return convert_vision_tower(state, vision["num_hidden_layers"])
    except KeyError as err:
        raise WeightsError(f"{where}: the vision tower lacks {err}") from err


def load_vision_tower(
    tower: dict[str, torch.Tensor],
    vision: dict,
    processor: dict,
    *,
    name: str,
    where: Path,
    device=None,
    dtype=None,
    offload: bool = False,
) -> Encoder:
    """An Encoder over a vision tower alone: `tower` in open_clip names (vision_tower_weights), `vision` the HF
    vision config, `processor` the image processor's settings (mean/std). Only patch_tokens/pixels work."""
    with weights_errors(where):
        visual = build_vision_tower(vision, where=where)
    state = {k.removeprefix("visual."): v.float() for k, v in tower.items()}
    missing, unexpected = visual.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj"]  # a tower read at a hidden layer has no use for a projection
    if missing or unexpected:
        raise WeightsError(f"{where}: vision tower weights do not fit (missing {missing[:5]}, extra {unexpected[:5]})")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    placement = Placement(dev, offload=offload)
    model = TowerOnly(visual).to(placement.load_device, dt)
    preprocess = processor_transform(processor, vision["image_size"])
    return Encoder(model, preprocess, None, name=name, device=dev, dtype=dt, placement=placement)
