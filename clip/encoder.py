"""The shared encoder: one open_clip model serving embeddings, zero-shot classification, patch tokens
(the VLM's input) and per-token text states (the prior's input)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from triptych.core.checks import check_batch_size, check_int, check_labels, check_texts
from triptych.core.images import ImageInput, load_images
from triptych.core.placement import Placement

from .templates import check_templates

LABEL_CACHE_SIZE = 64


@dataclass
class TextStates:
    """Text encoded for conditioning: pooled embedding and per-token final-layer states."""

    embeds: torch.Tensor  # (N, D) projected; not normalised unless asked (Kandinsky's prior reads them raw)
    states: torch.Tensor  # (N, L, width) final-norm token states
    mask: torch.Tensor  # (N, L) True for real tokens (not padding)


def split_preprocess(preprocess: Callable) -> tuple[list[Callable], torch.Tensor, torch.Tensor, int]:
    """open_clip's eval transform -> (PIL geometry steps, mean, std, side), so tensors are built batch-wise."""
    steps = list(getattr(preprocess, "transforms", []))
    norm = next((t for t in steps if isinstance(t, T.Normalize)), None)
    to_tensor = next((i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)), None)
    if norm is None or to_tensor is None:
        raise ValueError("expected an open_clip eval transform ending in ToTensor and Normalize")
    crop = next((t for t in steps if isinstance(t, T.CenterCrop)), None)
    squash = next((t for t in steps if isinstance(t, T.Resize) and not isinstance(t.size, int)), None)
    if crop is None and squash is None:
        raise ValueError("expected an open_clip eval transform with a centre crop or a resize to a fixed size")
    size = crop.size if crop is not None else squash.size
    side = size[0] if isinstance(size, (tuple, list)) else size
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, 3, 1, 1)
    return steps[:to_tensor], mean, std, int(side)


class Encoder:
    """A loaded CLIP/SigLIP model. Build it with `clip.load`; every method accepts PIL images, paths or arrays."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        placement: Placement | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.preprocess_transform, self.tokenizer = preprocess, tokenizer
        self.name, self.device, self.dtype = name, device, dtype
        self.placement = placement or Placement(device)  # shared with the VLM and generator built on this encoder
        self.placement.register("encoder", self.model)
        self._geometry, mean, std, self.image_size = split_preprocess(preprocess)
        self._mean, self._std = mean.to(device), std.to(device)
        self.kind = "siglip" if getattr(model, "logit_bias", None) is not None else "clip"
        self._labels: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._embed_dim: int | None = None
        self._zero_embed: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, kind={self.kind}, device={self.device}, dtype={self.dtype})"

    # ------------------------------------------------------------------ inputs
    @property
    def embed_dim(self) -> int:
        """D, the joint embedding size (read from the text projection, else measured once)."""
        if self._embed_dim is None:
            proj = getattr(self.model, "text_projection", None)
            if isinstance(proj, torch.nn.Linear):
                self._embed_dim = proj.out_features
            elif isinstance(proj, torch.Tensor):
                self._embed_dim = int(proj.shape[-1])
            else:
                self._embed_dim = int(self.encode_text(["a"]).shape[-1])
        return self._embed_dim

    @property
    def vision_width(self) -> int:
        """Width of the patch tokens (the VLM projector's input)."""
        visual = self.model.visual
        if hasattr(visual, "transformer"):  # open_clip's native ViT
            return int(visual.transformer.width)
        trunk = getattr(visual, "trunk", None)  # timm tower
        if trunk is not None and hasattr(trunk, "num_features"):
            return int(trunk.num_features)
        return int(self.patch_tokens(Image.new("RGB", (self.image_size, self.image_size))).shape[-1])

    @property
    def vision_depth(self) -> int | None:
        """How many blocks the vision tower has (patch_tokens' `layer` indexes them, negative from the end);
        None for a tower of another kind."""
        visual = self.model.visual
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)  # open_clip's native ViT
        if blocks is None:
            blocks = getattr(getattr(visual, "trunk", None), "blocks", None)  # timm tower
        return None if blocks is None else len(blocks)

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """The per-channel mean (0-1) the pixels are normalised with (LLaVA pads images with it)."""
        return tuple(float(v) for v in self._mean.flatten().tolist())

    @property
    def pad_id(self) -> int:
        return int(getattr(getattr(self.model, "text", self.model), "pad_id", 0))

    def pixels(self, images: ImageInput | Iterable[ImageInput]) -> torch.Tensor:
        """Images -> (N, 3, S, S) normalised pixels on the encoder's device and dtype."""
        return self._pixels(load_images(images))

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = []
        for image in images:
            if image.size != (self.image_size, self.image_size):
                for step in self._geometry:
                    image = step(image)
            arrays.append(np.asarray(image))  # (S, S, 3) uint8: load_images gave RGB
        batch = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2)  # (N, 3, S, S) uint8
        batch = (batch.float().div(255) - self._mean) / self._std
        return batch.to(self.dtype)

    def tokenize(self, texts: str | Iterable[str]) -> torch.Tensor:
        """Texts -> (N, L) token ids; text past the context length is truncated."""
        return self.tokenizer(check_texts(texts)).to(self.device)

    # ------------------------------------------------------------------ encoders
    @torch.inference_mode()
    def encode_image(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int = 256, normalize: bool = True
    ) -> torch.Tensor:
        """(N, D) float32 image embeddings, L2-normalised unless `normalize=False` (the unCLIP decoder's input)."""
        batch_size = check_batch_size(batch_size)
        images = load_images(images)
        out = [
            self.model.encode_image(self._pixels(images[i : i + batch_size]), normalize=normalize)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).float()

    @torch.inference_mode()
    def encode_text(self, texts: str | Iterable[str], batch_size: int = 256) -> torch.Tensor:
        """(N, D) float32 L2-normalised text embeddings."""
        batch_size = check_batch_size(batch_size)
        texts = check_texts(texts)
        out = [
            self.model.encode_text(self.tokenizer(texts[i : i + batch_size]).to(self.device), normalize=True)
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(out).float()

    @torch.inference_mode()
    def text_states(self, texts: str | Iterable[str], allow_empty: bool = False, normalize: bool = False) -> TextStates:
        """Projected embeddings (unnormalised, as Kandinsky's prior reads them, unless `normalize`) plus
        final-layer token states and their padding mask: the prior's conditioning. `allow_empty` admits ""
        (the unconditional prompt of classifier-free guidance)."""
        tokens = self.tokenizer(check_texts(texts, allow_empty=allow_empty)).to(self.device)
        out = self.model.forward_intermediates(
            text=tokens, text_indices=[-1], normalize_intermediates=True, normalize=normalize
        )
        masker = getattr(self.tokenizer, "attention_mask", None)  # HF tokenizers may pad with the end token
        mask = masker(tokens) if masker else tokens != self.pad_id
        return TextStates(out["text_features"], out["text_intermediates"][0], mask)

    @torch.inference_mode()
    def zero_image_embed(self) -> torch.Tensor:
        """(1, D) unnormalised embedding of an all-zero pixel tensor: unCLIP's "no image" condition. Computed
        once (under offload that spares a trip of the encoder to the device per generation)."""
        if self._zero_embed is None:
            size = self.image_size
            zeros = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
            self._zero_embed = self.model.encode_image(zeros, normalize=False).float()
        return self._zero_embed

    @torch.inference_mode()
    def patch_tokens(
        self, images: ImageInput | Iterable[ImageInput], layer: int = -1, normalize: bool = True
    ) -> torch.Tensor:
        """(N, grid*grid, width) patch tokens of one vision block (default the last), before pooling and
        projection, class/prefix tokens removed; `normalize` applies the tower's final norm. Works for native
        and timm-based open_clip towers."""
        return self._patch_tokens(self.pixels(images), layer, normalize)

    def zero_image_tokens(self, layer: int = -1, normalize: bool = True) -> torch.Tensor:
        """(1, grid*grid, width) patch tokens of the all-zero pixel tensor (see zero_image_embed)."""
        size = self.image_size
        zeros = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            return self._patch_tokens(zeros, layer, normalize)

    def _patch_tokens(self, pixels: torch.Tensor, layer: int, normalize: bool) -> torch.Tensor:
        depth = self.vision_depth or 1 << 16  # a tower of another kind checks the range itself
        layer = check_int("layer", layer, -depth, depth - 1)
        out = self.model.visual.forward_intermediates(
            pixels,
            indices=[layer],
            normalize_intermediates=normalize,
            intermediates_only=True,
            output_fmt="NLC",
        )
        return out["image_intermediates"][0]

    # ------------------------------------------------------------------ zero-shot
    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str] | str | None = None) -> torch.Tensor:
        """(C, D) class embeddings: each label under every template, normalised, averaged, renormalised.
        Cached per (labels, templates), so a label set already seen is not re-encoded."""
        labels, templates = check_labels(labels), check_templates(templates)
        key = (labels, templates)
        if key in self._labels:
            self._labels.move_to_end(key)
            return self._labels[key]
        texts = [t.format(label) for label in labels for t in templates]
        emb = self.encode_text(texts).view(len(labels), len(templates), -1).mean(1)  # (C, D)
        emb = F.normalize(emb, dim=-1)
        self._labels[key] = emb
        if len(self._labels) > LABEL_CACHE_SIZE:
            self._labels.popitem(last=False)
        return emb

    def clear_label_cache(self) -> None:
        """Forget every cached label set (the next classify call re-encodes its labels)."""
        self._labels.clear()

    @torch.inference_mode()
    def logits(
        self,
        images: ImageInput | Iterable[ImageInput],
        labels: Sequence[str],
        templates: Sequence[str] | str | None = None,
    ) -> torch.Tensor:
        """(N, C) scaled image-label similarities (plus the learned bias for SigLIP models)."""
        classes = self.label_embeddings(labels, templates)
        logits = self.encode_image(images) @ classes.T * self.model.logit_scale.exp().float()
        if self.kind == "siglip":
            logits = logits + self.model.logit_bias.float()
        return logits

    def classify(
        self,
        images: ImageInput | Iterable[ImageInput],
        labels: Sequence[str],
        templates: Sequence[str] | str | None = None,
    ) -> torch.Tensor:
        """(N, C) probabilities. CLIP models: softmax over labels (rows sum to 1). SigLIP models: an independent
        sigmoid per label with the learned logit_bias, as SigLIP was trained (rows need not sum to 1)."""
        logits = self.logits(images, labels, templates)
        return torch.sigmoid(logits) if self.kind == "siglip" else logits.softmax(dim=-1)
