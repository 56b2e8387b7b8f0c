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

import clip
import diffusion
import vlm
from clip.devices import precision_name
from clip.errors import WeightsError
from weights import presets

from .serving import RequestGate

CAPABILITIES: tuple[str, ...] = ("classify", "caption", "generate")


@dataclass(frozen=True)
class Preset:
    """Where a preset's parts live. `generator` is a diffusion.load name, or with `decoder` set, Kandinsky's
    prior repository (and `decoder` its decoder repository). A part a preset lacks is None."""

    name: str
    encoder: str  # a clip.load name
    vlm: str | None = None  # a vlm.load name
    generator: str | None = None
    decoder: str | None = None

    @classmethod
    def resolve(cls, name: str) -> Preset:
        """ "shapes"; a registered preset name (weights.presets: fetched, or from the hub cache offline); a folder
        laid out as the hub lays out a registered preset (one subfolder per repository); or a folder with
        clip/ and any of vlm/ and diffusion/ (our own format)."""
        if name == "shapes":
            return cls("shapes", "shapes", "shapes", "shapes")
        if name in presets.PRESETS:
            return cls._from_repos(name, presets.fetch(name))
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise WeightsError(
                f"preset {name!r} is neither 'shapes', a known preset ({', '.join(presets.PRESETS)}) nor a folder"
            )
        registered = presets.find_local(folder)
        if registered is not None:
            return cls._from_repos(str(folder), presets.local_folders(registered, folder))
        if not (folder / "clip").is_dir():
            raise WeightsError(
                f"preset folder {folder} holds neither clip/ (with optional vlm/ and diffusion/) nor the "
                f"repositories of a known preset ({', '.join(presets.PRESETS)})"
            )
        parts = {p: str(folder / p) if (folder / p).is_dir() else None for p in ("vlm", "diffusion")}
        return cls(str(folder), f"local-dir:{folder / 'clip'}", parts["vlm"], parts["diffusion"])

    @classmethod
    def _from_repos(cls, name: str, folders: dict[str, Path]) -> Preset:
        encoder = presets.encoder_folder(folders)
        prior, decoder = folders.get("prior"), folders.get("decoder")
        return cls(name, str(encoder), None, str(prior) if prior else None, str(decoder) if decoder else None)

    def load_generator(self, encoder: clip.Encoder) -> diffusion.UnCLIPGenerator:
        if self.decoder is not None:
            return diffusion.load_kandinsky(self.generator, self.decoder, encoder=encoder, name=self.name)
        return diffusion.load(self.generator, encoder=encoder)


@dataclass
class Service:
    """The encoder and whichever of the VLM and generator were asked for, loaded once, on one device."""

    preset: Preset
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
        spec = Preset.resolve(preset)
        encoder = clip.load(spec.encoder, device=device, dtype=dtype, offload=offload)
        captioner = vlm.load(spec.vlm, encoder=encoder) if spec.vlm and "caption" in capabilities else None
        generator = spec.load_generator(encoder) if spec.generator and "generate" in capabilities else None
        return cls(spec, encoder, captioner, generator, time.perf_counter() - start)

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
            f"**Preset:** `{self.preset.name}` · **device:** `{self.device}` · "
            f"**dtype:** `{precision_name(self.dtype)}` · loaded in {self.load_seconds:.1f} s\n\n"
            f"**Encoder:** `{self.encoder.name}` ({self.encoder.kind}, {self.encoder.image_size} px), "
            f"shared by every tab.\n\n| part | parameters |\n|---|---|\n{rows}\n\n"
            f"| model | weights on |\n|---|---|\n{where}{memory}"
        )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example_scenes(count: int = 4, seed: int = 2026) -> list[tuple[Image.Image, str]]:
    """World scenes and their canonical captions, drawn fresh (seeded) for the app's example rows."""
    from weights.world import caption, render, sample_scene

    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(count)]
    return [(render(scene), caption(scene)) for scene in scenes]


def example_prompts(count: int = 5, seed: int = 2026) -> list[str]:
    """World prompts of several GenEval categories, for the Generate tab's examples."""
    from weights.world import geneval_prompt

    rng = random.Random(seed)
    categories = ("colors", "attribute_binding", "counting", "position", "background", "two_objects")
    return [geneval_prompt(categories[i % len(categories)], rng)[0] for i in range(count)]


__all__ = ["CAPABILITIES", "Preset", "Service", "example_prompts", "example_scenes"]
