"""Loading generators: our own folders (generator.json + prior/ + unet/ + movq/ + schedulers, + grid/ in the
spatial layout), Kandinsky 2.2's two repositories as published (a prior repository with its CLIP, tokenizer,
PriorTransformer and UnCLIPScheduler; a decoder repository with its UNet, MoVQ and DDPMScheduler, run by our
pipeline so the numbers are KandinskyV22PriorPipeline's and KandinskyV22Pipeline's), and presets of either.
Every folder is checked before diffusers reads it."""

from __future__ import annotations

from pathlib import Path

import torch

from triptych import clip
from triptych.core.devices import resolve_device, resolve_dtype
from triptych.core.errors import InvalidSettingError, WeightsError
from triptych.core.manifest import MANIFEST, verify_manifest
from triptych.core.resolve import GENERATOR_CONFIG, Parts, is_decoder_repo, is_prior_repo, resolve
from triptych.core.weights_files import check_folder, config_value, positive_int, read_json, weights_errors

from .decoder import DecoderStage
from .grid import check_against
from .pipeline import UnCLIPGenerator
from .prior import PriorStage, text_width
from .settings import GenerationSettings

CONFIG = GENERATOR_CONFIG
# Kandinsky's own pipeline defaults, except 50 decoder steps (its 100 buy little) and its DDPM scheduler kept
DEFAULTS = GenerationSettings(steps=50, guidance=4.0, prior_steps=25, prior_guidance=4.0, scheduler="ddpm")


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


def load_stages(
    prior_folder: Path,
    decoder_folder: Path,
    encoder: clip.Encoder,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    *,
    prior_scheduler: str = "prior_scheduler",
    normalize_text: bool = False,
) -> tuple[PriorStage, DecoderStage]:
    """The prior (`prior/` + its scheduler folder) and decoder (`unet/`, `movq/`, `scheduler/`) on the encoder's
    device and dtype unless asked otherwise, registered with its placement (so offload covers them too)."""
    dev = encoder.device if device is None else resolve_device(device)
    dt = encoder.dtype if dtype is None else resolve_dtype(dtype, dev)
    store = encoder.placement.load_device if dev == encoder.device else dev
    for folder in {prior_folder, decoder_folder}:
        check_folder(folder)  # before diffusers reads a config
    # diffusers: missing files, no safetensors where we demand them, corrupt weights, malformed configs
    with weights_errors(f"cannot load the generator from {prior_folder} and {decoder_folder} (safetensors only)"):
        prior = PriorStage.from_pretrained(prior_folder, encoder, prior_scheduler, normalize_text)
        decoder = DecoderStage.from_pretrained(decoder_folder, store, dt)
    check_layout(prior, decoder, encoder)
    prior.to(store, dt)
    decoder.device = dev
    for part, model in (("prior", prior.prior), ("unet", decoder.unet), ("movq", decoder.movq)):
        encoder.placement.register(part, model)
    return prior, decoder


def check_layout(prior: PriorStage, decoder: DecoderStage, encoder: clip.Encoder) -> None:
    """WeightsError unless prior, decoder and encoder fit together: the prior reads the encoder's text (embedding
    width; token states of the transformer's width when it does not project them) and predicts what the decoder
    reads (the image embedding, plus the grid for the spatial layout, which must read this encoder's patch tokens)."""
    config, d = prior.prior.config, encoder.embed_dim
    width = text_width(config)
    problems = []
    if (config.embedding_proj_dim or config.embedding_dim) != d or decoder.embed_dim != d:
        problems.append(
            f"the prior reads {config.embedding_proj_dim or config.embedding_dim}-d text embeddings and the decoder "
            f"{decoder.embed_dim}-d image embeddings; the encoder makes {d}-d ones"
        )
    if encoder.text_states("a").states.shape[-1] != width:
        problems.append(f"the prior reads {width}-wide token states; the encoder's text is not that wide")
    if prior.output_dim != decoder.condition_dim:
        problems.append(
            f"the prior predicts {prior.output_dim}-d conditions and the decoder reads {decoder.condition_dim}-d ones"
        )
    if problems:
        raise WeightsError("the generator's parts do not fit together: " + "; ".join(problems))
    if decoder.grid is not None:
        check_against(decoder.grid, encoder)


def load(
    name: str | Parts = "shapes",
    encoder: clip.Encoder | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    offload: bool = False,
) -> UnCLIPGenerator:
    """Load a generator onto an encoder: "shapes", a generator folder (generator.json, prior/, prior_scheduler/,
    unet/, movq/, scheduler/), a preset name ("kandinsky-2.2"), or a folder holding Kandinsky's prior and decoder
    repositories. Pass the encoder already in use to share it; otherwise the generator's own is loaded.
    Defaults: CUDA + fp16 when available, else CPU + fp32. `offload` (when the encoder is loaded here): models
    wait on the CPU, each moved to the device only while it runs."""
    parts = resolve(name)
    name, folder = parts.name, Path(parts.require("generator"))
    if parts.decoder is not None:
        return load_kandinsky(folder, parts.decoder, encoder, device, dtype, name, offload)
    if not (folder / CONFIG).is_file():
        raise WeightsError(
            f"{folder / CONFIG} is missing: not a generator folder (nor one holding Kandinsky's prior and decoder)"
        )
    if (folder / MANIFEST).is_file():
        verify_manifest(folder)
    check_folder(folder)
    path = folder / CONFIG
    config = read_json(path)
    encoder_name = config_value(config, "encoder", str, path)
    image_size = positive_int(config, "image_size", path)
    normalize_text = config_value(config, "prior_normalize_text", bool, path, default=False)
    try:
        defaults = GenerationSettings().updated(**config_value(config, "defaults", dict, path, default={}))
    except InvalidSettingError as err:
        raise WeightsError(f"{path}: key 'defaults': {err}") from err
    if encoder is None:
        encoder = clip.load(encoder_name, device=device, dtype=dtype, offload=offload)
    prior, decoder = load_stages(folder, folder, encoder, device, dtype, normalize_text=normalize_text)
    return UnCLIPGenerator(prior, decoder, encoder, image_size, defaults, name)
