"""Exponential moving average of a model's weights, kept as a module so it saves like one (safetensors)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """`model` is the averaged copy; decay warms up as min(decay, (1 + n) / (10 + n)) over n updates."""

    def __init__(self, source: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(source).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, source: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in source.parameters()], 1 - decay)
