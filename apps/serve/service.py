"""The loaded models behind the app: one encoder shared by the classifier, the VLM and the generator.

`Service.load` reads a preset once; the Gradio app, the memory benchmark and the tests all use it, so "one
encoder in memory" is a property of this class (`service.captioner.encoder is service.encoder`).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from triptych import clip, diffusion, vlm
from triptych.core.devices import precision_name
from triptych.core.resolve import Parts, resolve

from .serving import RequestGate

CAPABILITIES: tuple[str, ...] = ("classify", "caption", "generate")


@dataclass
class Service:
    """The encoder and whichever of the VLM and generator were asked for, loaded once, on one device."""

    preset: Parts  # what the preset name resolved to (core.resolve)
    encoder: clip.Encoder
    captioner: vlm.Captioner | None = None
    generator: diffusion.UnCLIPGenerator | None = None
    load_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one model call at a time on the device
    gate: RequestGate = field(default_factory=RequestGate)  # requests in flight; closed when the server stops

    @classmethod
    def load(
        cls,
        preset: str = "shapes",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        capabilities: tuple[str, ...] = CAPABILITIES,
        offload: bool = False,
    ) -> Service:
        """Load the encoder, then the VLM and the generator on top of that same encoder. `offload` keeps every
        model on the CPU and moves only the one running to the device (for GPUs too small for the preset)."""
        unknown = set(capabilities) - set(CAPABILITIES)
        if unknown or not capabilities:
            raise ValueError(f"capabilities must be a non-empty subset of {CAPABILITIES}, got {capabilities}")
        start = time.perf_counter()
        parts = resolve(preset)  # once: every loader below gets the same folders
        encoder = clip.load(parts, device=device, dtype=dtype, offload=offload)
        captioner = vlm.load(parts, encoder=encoder) if parts.vlm and "caption" in capabilities else None
        generator = diffusion.load(parts, encoder=encoder) if parts.generator and "generate" in capabilities else None
        return cls(parts, encoder, captioner, generator, time.perf_counter() - start)

    @property
    def public_name(self) -> str:
        """The preset's name as the page shows it (see `shown`)."""
        return shown(self.preset.name)

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per loaded part; the encoder is counted once however many parts use it."""
        counts = {"encoder": _count(self.encoder.model)}
        if self.captioner is not None:
            counts["vlm (projector + decoder)"] = _count(self.captioner.vlm)
        if self.generator is not None:
            g = self.generator
            counts["prior"] = _count(g.prior.prior)
            counts["decoder (unet + vae)"] = _count(g.decoder.unet) + _count(g.decoder.movq)
        return counts

    def about(self) -> str:
        """Markdown naming what is loaded, where, and in which precision."""
        rows = "\n".join(f"| {part} | {n / 1e6:.2f} M |" for part, n in self.parameter_counts().items())
        where = "\n".join(f"| {name} | {place} |" for name, place in self.encoder.placement.where().items())
        memory = ""
        if self.device.type == "cuda":
            memory = f"\n\nAccelerator memory in use: {torch.cuda.memory_allocated(self.device) / 2**20:.0f} MiB."
        return (
            f"**Preset:** `{self.public_name}` · **device:** `{self.device}` · "
            f"**dtype:** `{precision_name(self.dtype)}` · loaded in {self.load_seconds:.1f} s\n\n"
            f"**Encoder:** `{shown(self.encoder.name)}` ({self.encoder.kind}, {self.encoder.image_size} px), "
            f"shared by every tab.\n\n| part | parameters |\n|---|---|\n{rows}\n\n"
            f"| model | weights on |\n|---|---|\n{where}{memory}"
        )


def shown(name: str) -> str:
    """A model name as visitors see it: a folder by its last part, never the server's full path."""
    return Path(name).name if "/" in name and not name.startswith("hf-hub:") else name


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example_scenes(count: int = 4, seed: int = 2026) -> list[tuple[Image.Image, str]]:
    """World scenes and their canonical captions, drawn fresh (seeded) for the app's example rows."""
    from triptych.world import caption, render, sample_scene

    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    return [(render(scene), caption(scene)) for scene in scenes]


def example_prompts(count: int = 5, seed: int = 2026) -> list[str]:
    """World prompts of several GenEval categories, for the Generate tab's examples."""
    from triptych.world import geneval_prompt

    rng = random.Random(seed)
    categories = ("colors", "attribute_binding", "counting", "position", "background", "two_objects")
    return [geneval_prompt(categories[i % len(categories)], rng)[0] for i in range(count)]


__all__ = ["CAPABILITIES", "Service", "example_prompts", "example_scenes"]
