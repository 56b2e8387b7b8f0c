"""Named presets of real pretrained weights: which hub repositories each needs, what it is for, its size.

A preset is fetched with the hub client (its cache, resumable downloads, progress bars), or read from a local
folder laid out as `hf download REPO --local-dir FOLDER/<repo name>` writes it, one subfolder per repository.
Only safetensors, JSON, tokenizer text files and chat templates are fetched; nothing else is ever read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from .errors import WeightsError

WEIGHT_FILES = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.jinja",
)  # configs, weights, tokenizer vocab/merges, chat templates

# role -> files a local copy must have (globs, relative to the repository folder)
REQUIRED: dict[str, tuple[str, ...]] = {
    "encoder": ("open_clip_config.json", "open_clip_model*.safetensors"),
    "prior": (
        "text_encoder/config.json",
        "text_encoder/model*.safetensors",
        "image_encoder/config.json",
        "image_encoder/model*.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "prior/config.json",
        "prior/diffusion_pytorch_model*.safetensors",
        "scheduler/scheduler_config.json",
    ),
    "decoder": (
        "unet/config.json",
        "unet/diffusion_pytorch_model*.safetensors",
        "movq/config.json",
        "movq/diffusion_pytorch_model*.safetensors",
        "scheduler/scheduler_config.json",
    ),
    "language_model": ("config.json", "model*.safetensors", "tokenizer.json"),
    "clip": ("config.json", "model*.safetensors", "vocab.json", "merges.txt"),  # a transformers CLIPModel
    "llava": ("config.json", "model*.safetensors", "tokenizer.json"),  # LlavaForConditionalGeneration (llava-hf)
}


@dataclass(frozen=True)
class Repo:
    """One hub repository a preset reads, in one role."""

    repo_id: str
    role: str  # a key of REQUIRED
    revision: str | None = None
    download_gb: float = 0.0  # the safetensors fetched (parameters x stored bytes), from the model cards

    @property
    def folder_name(self) -> str:
        """The subfolder a local preset folder keeps it in."""
        return self.repo_id.split("/")[-1]

    def missing(self, folder: Path) -> list[str]:
        """Required files (globs) absent from a local copy."""
        return [pattern for pattern in REQUIRED[self.role] if not any(folder.glob(pattern))]


@dataclass(frozen=True)
class Preset:
    """A named bundle of repositories, with what it is for and its parameter counts (from the model cards)."""

    name: str
    purpose: str
    repos: tuple[Repo, ...]
    params_millions: dict[str, float] = field(default_factory=dict)

    @property
    def fp16_gib(self) -> float:
        """Weights in fp16 (2 bytes a parameter); activations come on top."""
        return sum(self.params_millions.values()) * 2e6 / 2**30

    @property
    def download_gb(self) -> float:
        return sum(repo.download_gb for repo in self.repos)

    def roles(self) -> set[str]:
        return {repo.role for repo in self.repos}


VIT_B_32 = Repo("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "encoder", download_gb=0.61)
# LLaVA-1.5's tower is this CLIP, frozen: the VLM reads the encoder's patch tokens (the checkpoint's fp16 copy of
# the tower is downloaded but not loaded)
CLIP_L_336 = Repo("openai/clip-vit-large-patch14-336", "clip", download_gb=1.71)
LLAVA_NOTE = (
    "captions and answers about real photos (LLaVA-1.5: the projector and {lm} of llava-hf, converted on load) on "
    "OpenAI's CLIP ViT-L/14-336, which also classifies"
)
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "clip-vit-b-32",
            "zero-shot classification and image/text search (open_clip ViT-B-32, LAION-2B)",
            (VIT_B_32,),
            {"encoder": 151.3},
        ),
        Preset(
            "siglip-vit-b-16",
            "zero-shot classification with independent per-label sigmoid scores (SigLIP ViT-B-16, WebLI)",
            (Repo("timm/ViT-B-16-SigLIP", "encoder", download_gb=0.81),),
            {"encoder": 203.2},
        ),
        Preset(
            "llava-smollm2-135m",
            "the LLaVA recipe: train a projector (and optionally the decoder) from ViT-B-32 patch tokens into "
            "SmolLM2-135M-Instruct on your captioned images, then serve the VLM folder it writes",
            (VIT_B_32, Repo("HuggingFaceTB/SmolLM2-135M-Instruct", "language_model", download_gb=0.27)),
            {"encoder": 151.3, "language model": 134.5},
        ),
        Preset(
            "llava-1.5-7b",
            LLAVA_NOTE.format(lm="Vicuna-7B"),
            (CLIP_L_336, Repo("llava-hf/llava-1.5-7b-hf", "llava", download_gb=14.13)),
            {"encoder": 427.9, "projector": 21.0, "language model": 6738.4},
        ),
        Preset(
            "llava-1.5-13b",
            LLAVA_NOTE.format(lm="Vicuna-13B"),
            (CLIP_L_336, Repo("llava-hf/llava-1.5-13b-hf", "llava", download_gb=26.70)),
            {"encoder": 427.9, "projector": 31.5, "language model": 13015.9},
        ),
        Preset(
            "kandinsky-2.2",
            "text-to-image, image variations and interpolation at 512 px (Kandinsky 2.2: CLIP ViT-bigG-14, "
            "diffusion prior, UNet decoder, MoVQ); the encoder also classifies",
            (
                Repo("kandinsky-community/kandinsky-2-2-prior", "prior", download_gb=14.2),
                Repo("kandinsky-community/kandinsky-2-2-decoder", "decoder", download_gb=5.1),
            ),
            {"image encoder": 1844.9, "text encoder": 694.7, "prior": 1000.0, "unet": 1222.0, "movq": 67.0},
        ),
    )
}


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise WeightsError(f"unknown preset {name!r}; known: shapes, {', '.join(PRESETS)}")
    return PRESETS[name]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _checked(preset: Preset, repo: Repo, folder: Path) -> Path:
    missing = repo.missing(folder)
    if missing:
        raise WeightsError(
            f"preset {preset.name!r}: {folder} lacks {', '.join(missing)} (from {repo.repo_id}); "
            f"fetch it with `triptych download {preset.name}`"
        )
    return folder


def local_folders(preset: Preset, root: Path) -> dict[str, Path]:
    """role -> folder inside a local preset folder (root/<repo name>), each checked for its required files."""
    return {repo.role: _checked(preset, repo, root / repo.folder_name) for repo in preset.repos}


def find_local(root: Path) -> Preset | None:
    """The preset whose repositories are all subfolders of `root` (the largest such, as presets share
    repositories), if any."""
    for preset in sorted(PRESETS.values(), key=lambda p: -len(p.repos)):
        if all((root / repo.folder_name).is_dir() for repo in preset.repos):
            return preset
    return None


def fetch(name: str, to: Path | None = None, cache_dir: Path | None = None) -> dict[str, Path]:
    """role -> local folder for a named preset: downloaded (resumably, with progress bars) into `to`/<repo name>
    or the hub cache; offline (HF_HUB_OFFLINE=1), only what is already there is used, and a missing file is
    named."""
    preset = get(name)
    folders = {}
    for repo in preset.repos:
        target = Path(to) / repo.folder_name if to is not None else None
        if target is not None and offline():
            folders[repo.role] = _checked(preset, repo, target)
            continue
        try:
            path = snapshot_download(
                repo.repo_id,
                revision=repo.revision,
                allow_patterns=list(WEIGHT_FILES),
                local_dir=target,
                cache_dir=cache_dir,
                local_files_only=offline(),
            )
        except LocalEntryNotFoundError as err:
            raise WeightsError(
                f"preset {name!r} needs {repo.repo_id}, which is not in the hub cache, and the hub "
                f"{'is off (HF_HUB_OFFLINE=1)' if offline() else 'cannot be reached'}; download it where there "
                f"is network (`triptych download {name} --to DIR`) and pass the folder instead"
            ) from err
        except (HfHubHTTPError, OSError) as err:
            raise WeightsError(f"could not download {repo.repo_id} for preset {name!r}: {err}") from err
        folders[repo.role] = _checked(preset, repo, Path(path))
    return folders


def table() -> str:
    """Markdown: every preset, what it is for, its fp16 weight memory and its download size."""
    rows = [
        "| preset | for | repositories | fp16 weights | download (≈ parameters x stored bytes) |",
        "|---|---|---|---|---|",
        "| `shapes` | the bundled shapes-world models: all three jobs offline, fast on a CPU | (bundled) | 0.02 GiB | "
        "none |",
    ]
    for p in PRESETS.values():
        repos = ", ".join(f"`{r.repo_id}`" for r in p.repos)
        rows.append(f"| `{p.name}` | {p.purpose} | {repos} | {p.fp16_gib:.1f} GiB | {p.download_gb:.1f} GB |")
    return "\n".join(rows)
