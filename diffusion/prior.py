"""The prior: CLIP text embedding + token states -> CLIP image embedding, by diffusion over the embedding.

The loop is KandinskyV22PriorPipeline's, step for step, so a Kandinsky-format `prior/` folder gives the same
numbers here as there; on top of it sits DALL-E 2's trick of drawing several candidates and keeping the one
closest to the text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer, UnCLIPScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from triptych.clip import Encoder
from triptych.core.errors import WeightsError
from triptych.core.weights_files import read_json

from .cell_prior import CellPriorTransformer

# the prior classes a folder may name (config.json "_class_name"); nothing else is ever built from a name
PRIOR_CLASSES: dict[str, type] = {"PriorTransformer": PriorTransformer, "CellPriorTransformer": CellPriorTransformer}


def padded_text_width(config) -> int | None:
    """The text width a spatial-layout prior wider than its text reads, or None for every other prior.

    diffusers projects token states with a Linear whose input is the predicted vector's width (`embedding_dim`); a
    spatial prior predicts the pooled embedding plus the grid, wider than the text, so its token states are
    zero-padded up to that width (`pad_states`), which is exactly a Linear from the text's own width."""
    wider = config.embedding_proj_dim and config.embedding_dim > config.embedding_proj_dim
    linear = getattr(config, "encoder_hid_proj_type", None) == "linear"  # a CellPriorTransformer has none
    return int(config.embedding_proj_dim) if wider and linear else None


def text_width(config) -> int:
    """The token-state width a prior reads from the encoder: a cell prior's own `text_width`; for a
    PriorTransformer the padded width, else the predicted vector's when it projects them, else its own width."""
    if "text_width" in config:
        return int(config.text_width)
    inner = config.num_attention_heads * config.attention_head_dim
    return padded_text_width(config) or (config.embedding_dim if config.encoder_hid_proj_type else inner)


def prior_class(folder: Path) -> type:
    """The class a `prior/` folder's config.json names, from PRIOR_CLASSES only (WeightsError otherwise)."""
    path = folder / "config.json"
    name = read_json(path).get("_class_name", "PriorTransformer")
    if name not in PRIOR_CLASSES:
        raise WeightsError(f"{path}: '_class_name' {name!r} is not a prior triptych reads ({', '.join(PRIOR_CLASSES)})")
    return PRIOR_CLASSES[name]


def pad_states(states: torch.Tensor, config) -> torch.Tensor:
    """(N, L, W) token states -> (N, L, embedding_dim) for a prior that reads them padded (padded_text_width);
    unchanged otherwise."""
    if padded_text_width(config) is None:
        return states
    return F.pad(states, (0, config.embedding_dim - states.shape[-1]))


class PriorStage:
    """A PriorTransformer (or a CellPriorTransformer) with its scheduler, conditioned by the shared encoder's text
    side."""

    def __init__(
        self, prior: PriorTransformer, scheduler: SchedulerMixin, encoder: Encoder, normalize_text: bool = False
    ) -> None:
        """`normalize_text`: condition on unit-length text embeddings (the bundled shapes prior was trained so)
        rather than the raw projected ones (Kandinsky 2.2)."""
        self.prior, self.scheduler, self.encoder = prior.eval(), scheduler, encoder
        self.normalize_text = normalize_text
        # the unconditional image's condition (1, E): the zero image's embedding; the generator (or trainer)
        # sets its decoder's, which adds the grid in the spatial layout
        self.zero_condition: Callable[[], torch.Tensor] = encoder.zero_image_embed

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        encoder: Encoder,
        scheduler_folder: str = "prior_scheduler",
        normalize_text: bool = False,
    ) -> PriorStage:
        """`<folder>/prior` (a PriorTransformer or a cell prior, safetensors only) and `<folder>/<scheduler_folder>`."""
        folder = Path(folder)
        model = prior_class(folder / "prior")
        prior = model.from_pretrained(folder / "prior", use_safetensors=True, torch_dtype=encoder.dtype)
        scheduler = UnCLIPScheduler.from_pretrained(folder / scheduler_folder)
        return cls(prior, scheduler, encoder, normalize_text)  # on the CPU: the loader places it

    def to(self, device: torch.device, dtype: torch.dtype) -> PriorStage:
        """Move the PriorTransformer (cast only when the dtype differs: diffusers warns on every cast)."""
        self.prior.to(device)
        if self.prior.dtype != dtype:
            self.prior.to(dtype=dtype)
        return self

    @property
    def output_dim(self) -> int:
        """E, the width of what it predicts: the image embedding, plus the grid for a spatial-layout prior."""
        config = self.prior.config
        return int(getattr(config, "clip_embed_dim", None) or config.embedding_dim)

    def conditions(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, D) text embeddings, (N, L, width) token states (padded for a wide spatial prior), (N, L) mask, in
        the prior's dtype."""
        states = self.encoder.text_states(texts, allow_empty=True, normalize=self.normalize_text)
        dtype = self.prior.dtype
        return states.embeds.to(dtype), pad_states(states.states, self.prior.config).to(dtype), states.mask

    @torch.inference_mode()
    def __call__(
        self,
        prompts: list[str],
        negative_prompts: list[str] | None = None,
        *,
        steps: int = 25,
        guidance: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,  # a list: one per row
        num_images: int = 1,
        candidates: int = 1,
        progress: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image conditions, negative image conditions), each (len(prompts) * num_images, embedding_dim): the
        image embedding, followed by the grid for a spatial-layout prior.

        Without negative prompts the negative is the zero image's condition (`zero_condition()`), as Kandinsky
        does; with them, the negatives go through the prior too
        (guided away from themselves), also as Kandinsky does.
        """
        n = len(prompts)
        texts = prompts + (negative_prompts or [])
        uncond = (negative_prompts * 2) if negative_prompts else [""] * n
        per_text = num_images * candidates
        embeds, states, mask = self.conditions(texts)
        zero = None
        if not negative_prompts:
            zero = self.zero_condition()  # (1, E), while the encoder is here
            if zero.shape[1] != self.output_dim:
                raise ValueError(
                    f"this prior predicts {self.output_dim}-d conditions but its zero condition is "
                    f"{zero.shape[1]}-d: set PriorStage.zero_condition to the decoder's (UnCLIPGenerator does)"
                )
        guided = guidance > 1
        if guided:
            unconditional = self.conditions(uncond)  # first half of the batch, as Kandinsky orders it
            embeds, states, mask = (torch.cat([u, c]) for u, c in zip(unconditional, (embeds, states, mask)))
        embeds, states, mask = (x.repeat_interleave(per_text, dim=0) for x in (embeds, states, mask))
        batch = len(texts) * per_text
        self.scheduler.set_timesteps(steps, device=self.encoder.device)
        timesteps = self.scheduler.timesteps
        shape = (batch, self.prior.config.embedding_dim)
        latents = randn_tensor(shape, generator=generator, device=self.encoder.device, dtype=embeds.dtype)
        latents = latents * self.scheduler.init_noise_sigma  # (B, D)
        for i, t in enumerate(tqdm(timesteps, desc="prior", disable=not progress, leave=False)):
            model_input = torch.cat([latents] * 2) if guided else latents
            predicted = self.prior(
                model_input, timestep=t, proj_embedding=embeds, encoder_hidden_states=states, attention_mask=mask
            ).predicted_image_embedding
            if guided:
                uncond_pred, cond_pred = predicted.chunk(2)
                predicted = uncond_pred + guidance * (cond_pred - uncond_pred)
            extra = {}
            if isinstance(self.scheduler, UnCLIPScheduler):
                extra["prev_timestep"] = timesteps[i + 1] if i + 1 < len(timesteps) else None
            latents = self.scheduler.step(predicted, t, latents, generator=generator, **extra).prev_sample
        image_embeds = self.prior.post_process_latents(latents)  # (B, D)
        if candidates > 1:
            text_embeds = embeds[-batch:] if guided else embeds  # the conditional half, one row per draw
            image_embeds = _closest(image_embeds, text_embeds, candidates)
        if negative_prompts:
            return tuple(image_embeds.chunk(2))  # type: ignore[return-value]
        return image_embeds, zero.to(image_embeds.dtype).expand(len(image_embeds), -1)


def _closest(image_embeds: torch.Tensor, text_embeds: torch.Tensor, candidates: int) -> torch.Tensor:
    """(B*k, E) draws -> (B, E): per group of k, the draw whose image embedding (the first D of E values) has
    the highest cosine to its (B*k, D) text embedding."""
    pooled = image_embeds[:, : text_embeds.shape[1]]
    scores = F.cosine_similarity(pooled.float(), text_embeds.float(), dim=-1).view(-1, candidates)
    best = scores.argmax(dim=1) + torch.arange(scores.shape[0], device=scores.device) * candidates
    return image_embeds[best]
