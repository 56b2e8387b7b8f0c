"""`clip.load`: one place that resolves bundled presets, open_clip names/tags, local folders and hub repos."""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
from huggingface_hub import snapshot_download

from triptych.core import manifest
from triptych.core.devices import precision_name, resolve_device, resolve_dtype
from triptych.core.errors import WeightsError
from triptych.core.placement import Placement
from triptych.core.presets import WEIGHT_FILES
from triptych.core.resolve import Parts, resolve
from triptych.core.weights_files import check_folder, config_value, read_json, weights_errors

from .encoder import Encoder
from .hf_bridge import HFClipFolders, find_hf_clip, load_hf_clip
from .hf_siglip import load_hf_siglip

CHECKPOINT = "open_clip_model.safetensors"
CONFIG = "open_clip_config.json"


def open_clip_source(source: str, pretrained: str | None = None) -> tuple[str, str | None, Path | None]:
    """(open_clip model name, pretrained tag, local folder) for an encoder source the resolver found: a folder,
    "local-dir:FOLDER", "hf-hub:org/repo" or an open_clip architecture with an optional ":tag"."""
    if source.startswith("local-dir:"):
        return source, None, Path(source[len("local-dir:") :]).expanduser()
    if source.startswith("hf-hub:"):
        return source, None, None
    if Path(source).expanduser().is_dir():
        return f"local-dir:{Path(source).expanduser()}", None, Path(source).expanduser()
    arch, _, tag = source.partition(":")
    return arch, pretrained or tag or None, None


def check_local_dir(folder: Path) -> HFClipFolders | None:
    """A local folder must hold the open_clip config and safetensors weights (never pickles), or a transformers
    CLIP layout (returned); a manifest, when present, must match. Every config is checked for code before
    open_clip or transformers reads it."""
    if not folder.is_dir():
        raise WeightsError(f"encoder folder not found: {folder}")
    if (folder / manifest.MANIFEST).is_file():
        manifest.verify_manifest(folder)
    check_folder(folder)
    hf_layout = find_hf_clip(folder)
    if hf_layout is not None:
        return hf_layout
    for needed in (CONFIG, CHECKPOINT):
        if not (folder / needed).is_file():
            raise WeightsError(f"{folder / needed} is missing; an encoder folder needs {CONFIG} and {CHECKPOINT}")
    check_open_clip_config(read_json(folder / CONFIG), folder / CONFIG)
    return None


def check_open_clip_config(config: dict, path: Path) -> None:
    """The shape of an open_clip config, so a malformed one fails here, naming its key, not deep in open_clip;
    a text tower or tokenizer it names by local path is checked as a weights folder too."""
    model_cfg = config_value(config, "model_cfg", dict, path)
    config_value(model_cfg, "embed_dim", int, path)
    for tower in ("vision_cfg", "text_cfg"):
        config_value(model_cfg, tower, dict, path)
    for key in ("hf_model_name", "hf_tokenizer_name"):
        named = model_cfg["text_cfg"].get(key)
        if isinstance(named, str) and named and Path(named).expanduser().is_dir():
            check_folder(Path(named).expanduser())


def fetch_hub_encoder(repo: str, cache_dir: str | None) -> Path:
    """An hf-hub: encoder as a local folder: only its JSON, safetensors and text files fetched (or read from the
    cache), so it is loaded and checked exactly as a local folder is; a hub repository is as untrusted as one."""
    try:
        return Path(snapshot_download(repo, allow_patterns=list(WEIGHT_FILES), cache_dir=cache_dir))
    except Exception as err:  # offline, unknown repo: huggingface_hub's many error types
        raise WeightsError(f"could not load encoder 'hf-hub:{repo}' ({type(err).__name__}: {err})") from err


def load(
    name: str | Parts = "shapes",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    pretrained: str | None = None,
    cache_dir: str | None = None,
    offload: bool = False,
) -> Encoder:
    """Load an encoder.

    name: "shapes" (bundled); a preset name (`triptych presets`, e.g. "clip-vit-b-32"); an open_clip
    architecture with an optional tag ("ViT-B-32:laion2b_s34b_b79k" or pretrained="..."); "local-dir:/path" or a
    folder path (open_clip_config.json + open_clip_model.safetensors, a transformers CLIPModel folder, or
    Kandinsky's text_encoder/ + image_encoder/ + tokenizer/); or "hf-hub:org/repo".
    Defaults: CUDA + fp16 when available, else CPU + fp32. `offload`: keep models on the CPU and bring each to
    the device only while it runs (the VLM and generator loaded onto this encoder do the same).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    placement = Placement(dev, offload)
    parts = resolve(name)
    name, source = parts.name, str(parts.require("encoder"))
    if source.startswith("hf-hub:"):
        source = str(fetch_hub_encoder(source[len("hf-hub:") :], cache_dir))
    model_name, tag, folder = open_clip_source(source, pretrained)
    if folder is not None and (hf_layout := check_local_dir(folder)) is not None:
        # transformers' CLIP (e.g. Kandinsky 2.2's prior repository): converted on load
        with weights_errors(folder):
            load_hf = load_hf_siglip if hf_layout.kind == "siglip" else load_hf_clip
            model, preprocess, tokenizer = load_hf(hf_layout)
        model = model.to(placement.load_device, dt)
        return Encoder(model, preprocess, tokenizer, name=name, device=dev, dtype=dt, placement=placement)
    if folder is None and model_name not in open_clip.list_models() and not model_name.startswith("hf-hub:"):
        raise WeightsError(
            f"unknown encoder {name!r}: not a bundled preset, folder, hf-hub repo or open_clip "
            f"architecture (see open_clip.list_models())"
        )
    if tag and Path(tag).expanduser().exists() and not tag.endswith(".safetensors"):
        raise WeightsError(f"pretrained={tag!r}: only .safetensors weight files are loaded (pickles never are)")
    with weights_errors(f"could not load encoder {name!r}"):
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=tag,
            precision=precision_name(dt),
            device=placement.load_device,
            cache_dir=cache_dir,
        )
        tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    logging.getLogger(__name__).info("loaded encoder %s on %s (%s)", name, dev, dt)
    return Encoder(model, preprocess, tokenizer, name=name, device=dev, dtype=dt, placement=placement)
