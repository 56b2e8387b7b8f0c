"""Model cards: a folder's README.md with the Hub's YAML metadata (license, library, task, tags, base model,
datasets), written through huggingface_hub's ModelCard for every folder we export, so the Hub and any tool that
reads cards knows what the folder is. A card's hand-written text survives: only its metadata is (re)written."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from . import presets
from .checkpoint import current_folder

CARD = "README.md"
LICENSE = "apache-2.0"
WORLD_DATASET = "shapes-world"  # procedurally generated (world.md), not a Hub dataset
# per part: the library that loads it, the Hub task, tags
PARTS: dict[str, dict] = {
    "clip": {
        "library_name": "open_clip",
        "pipeline_tag": "zero-shot-image-classification",
        "tags": ["clip", "open_clip", "zero-shot-image-classification"],
        "load": 'from triptych import clip\nencoder = clip.load("{folder}")  # or open_clip "local-dir:{folder}"',
    },
    "vlm": {
        "library_name": "triptych",
        "pipeline_tag": "image-text-to-text",
        "tags": ["vlm", "image-captioning", "visual-question-answering", "llama"],
        "load": 'from triptych import vlm\ncaptioner = vlm.load("{folder}")',
    },
    "decoder": {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["llama"],
        "load": 'from transformers import AutoModelForCausalLM\nlm = AutoModelForCausalLM.from_pretrained("{folder}")',
    },
    "diffusion": {  # the pooled layout: diffusers' KandinskyV22Pipeline opens its decoder half (model_index.json)
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "tags": ["unclip", "kandinsky", "text-to-image"],
        "load": 'from triptych import diffusion\ngenerator = diffusion.load("{folder}")',
    },
}
# the spatial layout: no diffusers pipeline feeds the grid, so only triptych loads it whole
PARTS["diffusion-grid"] = {**PARTS["diffusion"], "library_name": "triptych", "tags": ["unclip", "text-to-image"]}


def card_data(part: str, base_model: list[str] | None = None, datasets: list[str] | None = None) -> ModelCardData:
    """The metadata of a `part` folder ("clip", "vlm", "decoder": a VLM's language model alone, "diffusion" or
    "diffusion-grid": a generator in the pooled or the spatial layout)."""
    info = PARTS[part]
    return ModelCardData(
        license=LICENSE,
        library_name=info["library_name"],
        pipeline_tag=info["pipeline_tag"],
        tags=["triptych", *info["tags"]],
        base_model=base_model or None,
        datasets=datasets or None,
    )


def hub_models(names: list[str | None]) -> list[str]:
    """The Hub repositories behind preset names (others, like folders, name no Hub model and are left out)."""
    return [repo.repo_id for name in names if name in presets.PRESETS for repo in presets.PRESETS[name].repos]


def current_card(out: str | Path) -> Path:
    """Where an export folder's existing card is: in `out`, or in the `.previous` copy a crash mid-switch left."""
    return (current_folder(Path(out)) or Path(out)) / CARD


def write_card(
    folder: str | Path,
    part: str,
    *,
    name: str,
    summary: str,
    base_model: list[str] | None = None,
    datasets: list[str] | None = None,
    keep_from: str | Path | None = None,
) -> Path:
    """Write `folder/README.md`: `part`'s metadata over the text of the card at `keep_from` (or the folder's own)
    when there is one, else a short generated card titled `name` (the folder's final name: exports write into a
    temporary one): `summary`, how to load it, where the training record is."""
    folder = Path(folder)
    path = folder / CARD
    old = Path(keep_from) if keep_from is not None else path
    if old.is_file():
        text = ModelCard.load(old).text.lstrip("\n")
    else:
        load = PARTS[part]["load"].format(folder=name)
        trained = (folder / "training.json").exists()
        record = "\n\nTraining record (recipe, steps, time, device): `training.json`." if trained else ""
        text = f"# {name}\n\n{summary}\n\n```python\n{load}\n```{record}\n"
    card = ModelCard(f"---\n{card_data(part, base_model, datasets).to_yaml()}\n---\n\n{text}")
    card.save(path)
    return path
