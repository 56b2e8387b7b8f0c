"""Exponential moving average of a model's weights: diffusers' EMAModel does the averaging; the average lives in
a module (`EMA.model`) so it samples, checkpoints (safetensors) and exports like the model itself."""

from __future__ import annotations

import copy

import torch
from diffusers.training_utils import EMAModel


class EMA:
    """`model` is the averaged copy; decay warms up as min(decay, (1 + n) / (10 + n)) over n updates.

    That warm-up is EMAModel's with update_after_step=-1 (its default, 0, starts one update later: n / (9 + n)); the
    bundled generators were trained with it, so resumed and retrained runs keep their numbers. EMAModel's
    shadow parameters are the module's own tensors (no second copy)."""

    def __init__(self, source: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(source).eval().requires_grad_(False)
        self.decay = decay
        self.restart(0)

    def restart(self, updates: int) -> None:
        """Go on from `model`'s current weights (e.g. just loaded from a checkpoint) as after `updates` updates."""
        self.averager = EMAModel(self.model.parameters(), decay=self.decay, update_after_step=-1, foreach=True)
        self.averager.shadow_params = list(self.model.parameters())  # average in place, in the module
        self.averager.optimization_step = updates

    @torch.no_grad()
    def update(self, source: torch.nn.Module) -> None:
        self.averager.step(source.parameters())
