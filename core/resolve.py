"""One resolver for every loader: a name -> the folder of each part it holds.

Names are: "shapes" (the bundled models); a registered preset (fetched, or read from the hub cache offline); a
folder laid out as the hub lays out a preset (one subfolder per repository, as `triptych download --to` writes);
a folder in our own layout (clip/ with any of vlm/ and diffusion/); a folder holding one part (an encoder; a VLM
or a transformers llava-hf folder; a generator; Kandinsky's prior and decoder repositories); or, for the encoder,
an open_clip architecture[:tag], "local-dir:FOLDER" or "hf-hub:org/repo". `clip.load`, `vlm.load`,
`diffusion.load` and the app's Service all take a name or the Parts it resolves to, so one name means the same
models everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from triptych.weights import SHAPES_DIR

from . import presets
from .errors import WeightsError
from .weights_files import read_json

GENERATOR_CONFIG = "generator.json"
LOCAL_DIR, HF_HUB = "local-dir:", "hf-hub:"
NEEDS = {  # what a folder of each part holds, for errors
    "encoder": "an encoder folder has open_clip_config.json + open_clip_model.safetensors, or a transformers CLIP",
    "vlm": "a VLM folder has config.json with a 'vlm' section, model.safetensors and tokenizer.json (or is a "
    "transformers llava-hf folder)",
    "generator": f"a generator folder has {GENERATOR_CONFIG} (or Kandinsky's prior and decoder repositories)",
}


@dataclass(frozen=True)
class Parts:
    """Where each part of a named model lives; a part the name lacks is None."""

    name: str
    encoder: str | None = None  # a folder, or an open_clip source ("ViT-B-32:laion2b_s34b_b79k", "hf-hub:...")
    vlm: Path | None = None
    generator: Path | None = None  # our generator folder, or Kandinsky's prior repository when `decoder` is set
    decoder: Path | None = None  # Kandinsky's decoder repository

    def require(self, part: str) -> str | Path:
        """The part's location, or a WeightsError saying what the part needs and what the name holds instead."""
        where = getattr(self, part)
        if where is None:
            held = [p for p in ("encoder", "vlm", "generator") if getattr(self, p) is not None]
            raise WeightsError(
                f"{self.name!r} holds no {part}: {NEEDS[part]} (it holds: {', '.join(held) or 'nothing loadable'})"
            )
        return where


def resolve(name: str | Parts) -> Parts:
    """The Parts a name stands for (see the module docstring); Parts pass through unchanged."""
    if isinstance(name, Parts):
        return name
    if not isinstance(name, str) or not name.strip():
        raise WeightsError(f"a model name must be non-empty text, got {name!r}")
    if name == "shapes":
        return Parts("shapes", str(SHAPES_DIR / "clip"), SHAPES_DIR / "vlm", SHAPES_DIR / "diffusion")
    if name in presets.PRESETS:
        return _from_repos(name, presets.fetch(name))
    folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
    looks_like_a_path = "/" in name and not name.startswith(HF_HUB) or name.startswith((".", "~"))
    if name.startswith(LOCAL_DIR) or looks_like_a_path or folder.is_dir():
        return _from_folder(name, folder)
    return Parts(name, encoder=name)  # an open_clip architecture[:tag] or hf-hub repository


def _from_folder(name: str, folder: Path) -> Parts:
    if not folder.is_dir():
        raise WeightsError(f"folder not found: {folder}")
    registered = presets.find_local(folder)
    if registered is not None:
        return _from_repos(name, presets.local_folders(registered, folder))
    if (folder / "clip").is_dir():  # our own layout
        parts = {p: folder / p if (folder / p).is_dir() else None for p in ("vlm", "diffusion")}
        return Parts(name, str(folder / "clip"), parts["vlm"], parts["diffusion"])
    if (folder / GENERATOR_CONFIG).is_file():
        return Parts(name, generator=folder)
    if _is_vlm(folder) or _is_llava(folder):
        return Parts(name, vlm=folder)
    pair = find_kandinsky_pair(folder)
    if pair is not None:
        return Parts(name, str(pair[0]), generator=pair[0], decoder=pair[1])
    if _is_encoder(folder):
        return Parts(name, encoder=str(folder))
    _refuse_transformers_vlm(folder)
    return Parts(name)


def _is_encoder(folder: Path) -> bool:
    """An open_clip folder, a transformers CLIPModel or SiglipModel folder or Kandinsky's split CLIP (clip.load
    checks the rest)."""
    config = folder / "config.json"
    return (
        (folder / "open_clip_config.json").is_file()
        or (folder / "text_encoder").is_dir()
        or (config.is_file() and read_json(config).get("model_type") in ("clip", "siglip"))
    )


def _from_repos(name: str, folders: dict[str, Path]) -> Parts:
    # an open_clip or transformers CLIP, else the CLIP Kandinsky's prior repository ships
    encoder = folders.get("encoder") or folders.get("clip") or folders.get("prior")
    vlm, prior, decoder = folders.get("llava"), folders.get("prior"), folders.get("decoder")
    return Parts(name, str(encoder) if encoder else None, vlm, prior, decoder)


def _is_llava(folder: Path) -> bool:
    """transformers' LlavaForConditionalGeneration layout (llava-hf), which vlm.load converts."""
    config = folder / "config.json"
    return config.is_file() and read_json(config).get("model_type") == "llava"


def _refuse_transformers_vlm(folder: Path) -> None:
    """A transformers vision-language folder other than LLaVA (Idefics, PaliGemma, LLaVA-NeXT...) is not ours to
    guess at: say what it is rather than "holds nothing loadable"."""
    config = folder / "config.json"
    if not config.is_file():
        return
    data = read_json(config)
    architectures = data.get("architectures") if isinstance(data.get("architectures"), list) else []
    vision_language = [a for a in architectures if isinstance(a, str) and a.endswith("ForConditionalGeneration")]
    if vision_language or "llava" in str(data.get("model_type", "")):  # llava-next, llava-onevision...
        what = vision_language[0] if vision_language else f"model_type {data.get('model_type')!r}"
        raise WeightsError(
            f"{folder} is a transformers vision-language folder ({what}); triptych converts only LLaVA "
            f"(model_type 'llava'). A triptych VLM folder has config.json with a 'vlm' section (vlm.load, or "
            f"Captioner.save_pretrained)"
        )


def _is_vlm(folder: Path) -> bool:
    """A VLM folder: config.json with a "vlm" section (the config is checked as it is read)."""
    config = folder / "config.json"
    return config.is_file() and "vlm" in read_json(config)


def is_prior_repo(folder: Path) -> bool:
    """Kandinsky's prior repository: prior/, scheduler/ and the text_encoder/ it was trained on."""
    return (
        all((folder / part / "config.json").is_file() for part in ("prior", "text_encoder"))
        and (folder / "scheduler").is_dir()
    )


def is_decoder_repo(folder: Path) -> bool:
    """Kandinsky's decoder repository: unet/ and movq/."""
    return (folder / "unet" / "config.json").is_file() and (folder / "movq" / "config.json").is_file()


def find_kandinsky_pair(root: Path) -> tuple[Path, Path] | None:
    """(prior repo, decoder repo) among the subfolders of `root`, whatever they are called."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    priors = [p for p in subfolders if is_prior_repo(p)]
    decoders = [p for p in subfolders if is_decoder_repo(p)]
    return (priors[0], decoders[0]) if priors and decoders else None
