"""Where the models live: all on the device, or (model CPU offload) waiting on the CPU with only the one in use
on the accelerator — for GPUs too small for a whole preset. Shared by every package through the encoder."""

from __future__ import annotations

import torch
from accelerate.utils import send_to_device
from torch import nn

STORAGE = torch.device("cpu")


class Placement:
    """Models registered by name. Without offload this only records them. With offload each waits on the CPU;
    calling it (or any of its submodules) moves it, and the inputs, to the device and every other registered
    model back to the CPU, as diffusers' enable_model_cpu_offload does. Peak memory: the largest model."""

    def __init__(self, device: torch.device, offload: bool = False) -> None:
        self.device, self.offload = torch.device(device), offload
        self.models: dict[str, nn.Module] = {}
        self.active: str | None = None

    @property
    def load_device(self) -> torch.device:
        """Where to load weights: the CPU when offloading (never the whole preset on the accelerator at once)."""
        return STORAGE if self.offload else self.device

    def register(self, name: str, model: nn.Module) -> None:
        """Track `model`; with offload, park it on the CPU and hook it so a call brings it to the device."""
        self.models[name] = model
        if not self.offload:
            return
        model.to(STORAGE)
        for module in model.modules():  # any entry point (forward, encode_text, decode, ...) calls a submodule
            module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True)

    def _pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            self.use(name)
            return send_to_device(args, self.device), send_to_device(kwargs, self.device)

        return hook

    def use(self, name: str) -> None:
        """Make `name` the one model on the device (a no-op without offload, or when it already is)."""
        if not self.offload or self.active == name:
            return
        for other, model in self.models.items():
            if other != name:
                model.to(STORAGE)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.models[name].to(self.device)
        self.active = name

    def where(self) -> dict[str, str]:
        """Model name -> where its weights are now (and, with offload, where they run)."""
        out = {}
        for name, model in self.models.items():
            now = str(next(model.parameters()).device)
            out[name] = f"{now} (offloaded; runs on {self.device})" if self.offload else now
        return out
