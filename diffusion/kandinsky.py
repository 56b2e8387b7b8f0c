"""Kandinsky 2.2 as published: a prior repository (CLIP text and image encoders, tokenizer, PriorTransformer,
UnCLIPScheduler) and a decoder repository (UNet, MoVQ, DDPMScheduler), run by our pipeline on the encoder the
prior repository ships, so the numbers are KandinskyV22PriorPipeline's and KandinskyV22Pipeline's."""

from __future__ import annotations

from pathlib import Path

import torch

import clip
from clip.errors import WeightsError

from .pipeline import UnCLIPGenerator, load_stages
from .settings import GenerationSettings

# Kandinsky's own pipeline defaults, except 50 decoder steps (its 100 buy little) and its DDPM scheduler kept
DEFAULTS = GenerationSettings(steps=50, guidance=4.0, prior_steps=25, prior_guidance=4.0, scheduler="ddpm")


def is_prior_repo(folder: Path) -> bool:
    """prior/, scheduler/ and the text_encoder/ it was trained on (our own generator folders have none)."""
    return (
        all((folder / part / "config.json").is_file() for part in ("prior", "text_encoder"))
        and (folder / "scheduler").is_dir()
    )


def is_decoder_repo(folder: Path) -> bool:
    return (folder / "unet" / "config.json").is_file() and (folder / "movq" / "config.json").is_file()


def find_pair(root: Path) -> tuple[Path, Path] | None:
    """(prior repo, decoder repo) among the subfolders of `root`, whatever they are called."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    priors = [p for p in subfolders if is_prior_repo(p)]
    decoders = [p for p in subfolders if is_decoder_repo(p)]
    return (priors[0], decoders[0]) if priors and decoders else None


def load_kandinsky(
    prior_folder: str | Path,
    decoder_folder: str | Path,
    encoder: clip.Encoder | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    name: str = "kandinsky-2.2",
    offload: bool = False,
) -> UnCLIPGenerator:
    """A generator from the two Kandinsky 2.2 repositories. Without `encoder`, the prior repository's CLIP is
    loaded (its text_encoder/ and image_encoder/, converted to open_clip); pass it to share one encoder."""
    prior_folder, decoder_folder = Path(prior_folder), Path(decoder_folder)
    if not is_prior_repo(prior_folder):
        raise WeightsError(f"{prior_folder} is not a Kandinsky prior repository (prior/, scheduler/, text_encoder/)")
    if not is_decoder_repo(decoder_folder):
        raise WeightsError(f"{decoder_folder} is not a Kandinsky decoder repository (unet/, movq/, scheduler/)")
    if encoder is None:
        encoder = clip.load(str(prior_folder), device=device, dtype=dtype, offload=offload)
    prior, decoder = load_stages(prior_folder, decoder_folder, encoder, device, dtype, prior_scheduler="scheduler")
    image_size = decoder.unet.config.sample_size * decoder.scale_factor
    return UnCLIPGenerator(prior, decoder, encoder, image_size, DEFAULTS, name)
