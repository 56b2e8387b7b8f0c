"""The unCLIP generator: prompts -> prior -> image embeddings -> decoder -> images, on the shared encoder.

Also image variations (the image's own embedding), interpolation between prompts and images in embedding
space, img2img, best-of-N reranking by the encoder and DALL-E 2's prior candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from triptych import clip
from triptych.core.checks import check_seed, check_texts
from triptych.core.errors import InvalidSettingError, InvalidTextError
from triptych.core.images import ImageInput, load_image

from . import grid as grid_module
from .decoder import DecoderStage, StepCallback, to_pixels
from .prior import PriorStage
from .schedulers import make_scheduler, scheduler_name
from .settings import GenerationSettings, is_real

MAX_BATCH_IMAGES = 256  # prompts x num_images x best_of in one call
# as diffusers: PIL images; (N, H, W, 3) float32 array; (N, 3, H, W) float tensor (both in [0, 1], before 8-bit
# rounding); (N, C, h, w) decoder latents before the VAE
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class UnCLIPGenerator:
    """A prior and a decoder joined to a shared encoder. `defaults` are the settings calls start from."""

    def __init__(
        self,
        prior: PriorStage,
        decoder: DecoderStage,
        encoder: clip.Encoder,
        image_size: int,
        defaults: GenerationSettings | None = None,
        name: str = "",
    ) -> None:
        self.prior, self.decoder, self.encoder = prior, decoder, encoder
        self.image_size, self.name = image_size, name
        self.defaults = (defaults or GenerationSettings()).checked()
        self.decoder_scheduler_config = dict(decoder.scheduler.config)  # as loaded; calls may switch scheduler
        self._zero: torch.Tensor | None = None
        prior.zero_condition = self.zero_condition

    def __repr__(self) -> str:
        return f"UnCLIPGenerator({self.name!r}, encoder={self.encoder.name!r}, device={self.encoder.device})"

    # ------------------------------------------------------------------ public API
    def generate(
        self,
        prompts: str | Sequence[str],
        seed: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        num_images: int | None = None,
        *,
        callback: StepCallback | None = None,
        progress: bool = True,
        output_type: str = "pil",
        **settings,
    ) -> list[Image.Image] | torch.Tensor | np.ndarray:
        """`num_images` images per prompt, prompt-major, as `output_type` (see OUTPUT_TYPES). Other settings: see
        GenerationSettings."""
        _check_output_type(output_type)
        _check_callback(callback)
        changes = dict(seed=seed, steps=steps, guidance=guidance, num_images=num_images, **settings)
        s = self._settings("generate", changes, unused=("strength",))
        return self._text_to_image(prompts, negative_prompt, s, _generator(s.seed), callback, progress, output_type)

    def generate_many(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        negative_prompts: Sequence[str] | None = None,
        **settings,
    ) -> list[list[Image.Image]]:
        """One batch for several prompts, each with its own seed (and negative prompt): prompt i's images are the
        ones `generate(prompts[i], seed=seeds[i], negative_prompt=negative_prompts[i], **settings)` gives, whoever
        shares the batch, because each prompt's noise comes from its own generator (a generator per row, as
        diffusers' randn_tensor takes them). Serving batches concurrent requests with it."""
        prompts = check_texts(prompts, "prompt")
        seeds = [check_seed(seed) for seed in seeds]
        if len(seeds) != len(prompts):
            raise InvalidSettingError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        s = self._settings("generate_many", settings, unused=("strength", "seed"))
        negatives = self._negatives(negative_prompts, len(prompts)) if negative_prompts is not None else None
        self._check_batch(len(prompts) * s.num_images * s.best_of)
        own = [_generator(seed) for seed in seeds]
        per_text, per_prompt = s.num_images * s.best_of * s.prior_candidates, s.num_images * s.best_of
        texts = own * (2 if negatives else 1)  # the prior draws the negatives' rows after the prompts'
        embeds, negative = self._prior(prompts, negatives, s, [g for g in texts for _ in range(per_text)], False)

        def target() -> torch.Tensor:
            return self.encoder.encode_text(prompts).repeat_interleave(s.num_images, dim=0)

        rows = [g for g in own for _ in range(per_prompt)]
        images = _to_pil(self._decode(embeds, negative, s, rows, target, None, False))
        k = s.num_images
        return [images[i * k : (i + 1) * k] for i in range(len(prompts))]

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        prior_num_inference_steps: int | None = None,
        prior_guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """Text to image in diffusers' words (as KandinskyV22CombinedPipeline's call): the same as `generate`,
        with `generator` (a torch.Generator; default: the seed 0) for the seed and an output with `.images`.
        `callback_on_step_end(pipe, step, timestep, {"latents": ...})` runs after each decoder step; the latents
        it returns replace the loop's. Size is the generator's own: height/width may only restate it."""
        for side, value in (("height", height), ("width", width)):
            if value is not None and value != self.image_size:
                raise InvalidSettingError(f"{side} must be {self.image_size} (this generator's size), got {value}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InvalidSettingError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        _check_output_type(output_type)
        unknown = sorted(set(callback_on_step_end_tensor_inputs) - {"latents"})
        if unknown:
            raise InvalidSettingError(f"callback_on_step_end_tensor_inputs: only 'latents' is offered, not {unknown}")
        _check_callback(callback_on_step_end)
        callback = None
        if callback_on_step_end is not None:

            def callback(step: int, timestep: int, latents: torch.Tensor) -> torch.Tensor:
                returned = callback_on_step_end(self, step, timestep, {"latents": latents}) or {}
                return returned.get("latents", latents)

        changes = dict(
            steps=num_inference_steps,
            guidance=guidance_scale,
            num_images=num_images_per_prompt,
            prior_steps=prior_num_inference_steps,
            prior_guidance=prior_guidance_scale,
        )
        s = self._settings("__call__", changes)
        generator = generator if generator is not None else _generator(s.seed)
        images = self._text_to_image(prompt, negative_prompt, s, generator, callback, True, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def save_pretrained(self, folder: str | Path, encoder: str | None = None) -> Path:
        """Write this generator as a folder `diffusion.load` (and, for a pooled-layout generator's decoder
        half, diffusers' `DiffusionPipeline.from_pretrained`) reads back; `encoder`: the name generator.json gives
        its encoder (default: the loaded encoder's name)."""
        from .saving import save_generator

        return save_generator(
            folder,
            self.prior,
            self.decoder,
            encoder=encoder if encoder is not None else self.encoder.name,
            image_size=self.image_size,
            defaults=self.defaults,
            scheduler_config=self.decoder_scheduler_config,
            source=self.name,
        )

    def variations(
        self,
        image: ImageInput,
        seed: int | None = None,
        num_images: int | None = None,
        *,
        callback: StepCallback | None = None,
        progress: bool = True,
        **settings,
    ) -> list[Image.Image]:
        """Images that share the given image's embedding: same content, new draws."""
        _check_callback(callback)
        s = self._settings("variations", dict(seed=seed, num_images=num_images, **settings), unused=("strength",))
        self._check_batch(s.num_images * s.best_of)
        embeds = self.image_condition(load_image(image))  # (1, E)
        return _to_pil(self._decode_one(embeds, s, _generator(s.seed), callback, progress))

    def interpolate(
        self,
        items: Sequence[str | ImageInput],
        weights: Sequence[float],
        seed: int | None = None,
        num_images: int | None = None,
        *,
        callback: StepCallback | None = None,
        progress: bool = True,
        **settings,
    ) -> list[Image.Image]:
        """Blend prompts and images: their image embeddings (prompts through the prior) mixed by `weights`
        (non-negative, normalised to sum 1), then decoded; an item of weight 0 gives what leaving it out gives.
        Every `str` item is a prompt; images are PIL images, arrays, bytes or `pathlib.Path` files."""
        s = self._settings("interpolate", dict(seed=seed, num_images=num_images, **settings), unused=("strength",))
        self._check_batch(s.num_images * s.best_of)
        if not items or len(items) != len(weights):
            raise InvalidSettingError(f"need one weight per item; got {len(items)} items and {len(weights)} weights")
        if not all(is_real(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise InvalidSettingError(f"weights must be finite, non-negative and not all zero; got {list(weights)}")
        generator = _generator(s.seed)
        parts: list[torch.Tensor | None] = []
        for item, weight in zip(items, weights):
            if isinstance(item, str):  # always a prompt: a str never names a file (images come as Path or pixels)
                prompt = check_texts(item, "prompt")
                if weight == 0:  # removed: its prior draw would move the shared noise and so change the others
                    parts.append(None)
                    continue
                one = s.updated(num_images=1, best_of=1)  # one embedding per prompt
                embeds, _ = self._prior(prompt, None, one, generator, progress)
                parts.append(embeds.float())
            else:
                parts.append(self.image_condition(item))  # draws no noise; still checks the image
        w = torch.tensor([float(x) for x in weights]) / sum(weights)
        blend = sum(wi * p for wi, p in zip(w.tolist(), parts) if p is not None)  # (1, E)
        return _to_pil(self._decode_one(blend, s, generator, callback, progress))

    def img2img(
        self,
        image: ImageInput,
        prompt: str,
        strength: float = 0.6,
        seed: int | None = None,
        negative_prompt: str | None = None,
        num_images: int | None = None,
        *,
        callback: StepCallback | None = None,
        progress: bool = True,
        **settings,
    ) -> list[Image.Image]:
        """Redraw `image` toward `prompt` (one prompt): `strength` 0 keeps the image, 1 ignores it."""
        _check_callback(callback)
        s = self.defaults.updated(seed=seed, num_images=num_images, strength=strength, **settings)
        prompts = check_texts(prompt, "prompt")
        if len(prompts) != 1:
            raise InvalidTextError(f"img2img takes one prompt, got {len(prompts)}")
        self._check_batch(s.num_images * s.best_of)
        generator = _generator(s.seed)
        embeds, negative = self._prior(prompts, self._negatives(negative_prompt, 1), s, generator, progress)
        pixels = self._to_pixels(load_image(image))
        init = self.decoder.encode(pixels).repeat(len(embeds), 1, 1, 1)  # (N, C, h, w)

        def target() -> torch.Tensor:
            return self.encoder.encode_text(prompts).repeat(s.num_images, 1)

        return _to_pil(self._decode(embeds, negative, s, generator, target, callback, progress, init_latents=init))

    def decode_embeddings(
        self,
        image_embeds: torch.Tensor,
        negative_image_embeds: torch.Tensor | None = None,
        seed: int | None = None,
        *,
        progress: bool = False,
        **settings,
    ) -> list[Image.Image]:
        """The decoder half alone, from (N, E) image conditions (`image_condition`; the zero image's as negative
        by default): one image per row. Settings: the decoder's (steps, guidance, scheduler) and the seed."""
        prior_only = ("prior_steps", "prior_guidance", "prior_candidates", "num_images", "best_of", "strength")
        s = self._settings("decode_embeddings", dict(seed=seed, **settings), unused=prior_only)
        image_embeds = self._check_embeds(image_embeds, "image_embeds")
        self._check_batch(len(image_embeds))
        if negative_image_embeds is None:
            negative_image_embeds = self.zero_condition().expand(len(image_embeds), -1)
        negative_image_embeds = self._check_embeds(negative_image_embeds, "negative_image_embeds")
        if negative_image_embeds.shape != image_embeds.shape:
            raise InvalidSettingError(
                f"negative_image_embeds has shape {tuple(negative_image_embeds.shape)}; "
                f"image_embeds has {tuple(image_embeds.shape)}"
            )
        return _to_pil(self._decode(image_embeds, negative_image_embeds, s, _generator(s.seed), None, None, progress))

    def image_condition(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """(N, E) what the decoder draws from, for real images: the unnormalised image embedding (E = D), followed
        for the spatial layout by the patch-token grid's projection (E = D + cells x G)."""
        return grid_module.image_condition(self.encoder, self.decoder.grid, images)

    def zero_condition(self) -> torch.Tensor:
        """(1, E) the all-zero image's condition: unCLIP's "no image", the decoder's unconditional half."""
        if self._zero is None:
            self._zero = grid_module.zero_condition(self.encoder, self.decoder.grid)
        return self._zero

    # ------------------------------------------------------------------ internals
    def _text_to_image(
        self,
        prompts: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None,
        s: GenerationSettings,
        generator: torch.Generator | list[torch.Generator],
        callback: StepCallback | None,
        progress: bool,
        output_type: str,
    ) -> list[Image.Image] | torch.Tensor | np.ndarray:
        prompts = check_texts(prompts, "prompt")
        negatives = self._negatives(negative_prompt, len(prompts))
        self._check_batch(len(prompts) * s.num_images * s.best_of)
        if output_type == "latent" and s.best_of > 1:
            raise InvalidSettingError("best_of ranks decoded images: it cannot give output_type='latent'")
        embeds, negative = self._prior(prompts, negatives, s, generator, progress)

        def target() -> torch.Tensor:  # (N, D): each image's prompt, for best-of-N
            return self.encoder.encode_text(prompts).repeat_interleave(s.num_images, dim=0)

        latent = output_type == "latent"
        out = self._decode(embeds, negative, s, generator, target, callback, progress, latent=latent)
        return _as_output(out, output_type)

    def _prior(
        self,
        prompts: list[str],
        negatives: list[str] | None,
        s: GenerationSettings,
        generator: torch.Generator | list[torch.Generator],
        progress: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings (and negatives): num_images x best_of draws per prompt, prompt-major."""
        return self.prior(
            prompts,
            negatives,
            steps=s.prior_steps,
            guidance=s.prior_guidance,
            generator=generator,
            num_images=s.num_images * s.best_of,
            candidates=s.prior_candidates,
            progress=progress,
        )

    def _decode_one(
        self,
        embed: torch.Tensor,
        s: GenerationSettings,
        generator: torch.Generator | list[torch.Generator],
        callback: StepCallback | None,
        progress: bool,
    ) -> torch.Tensor:
        """num_images draws (pixels, as _decode) from one (1, E) image condition against the zero image's;
        best-of-N reranks by closeness to its image embedding (the first D values)."""
        reps = s.num_images * s.best_of
        zero = self.zero_condition()

        def target() -> torch.Tensor:
            pooled = embed[:, : self.encoder.embed_dim]
            return F.normalize(pooled.float(), dim=-1).repeat(s.num_images, 1)

        return self._decode(embed.repeat(reps, 1), zero.repeat(reps, 1), s, generator, target, callback, progress)

    def _decode(
        self,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        s: GenerationSettings,
        generator: torch.Generator | list[torch.Generator],
        target: Callable[[], torch.Tensor] | None,
        callback: StepCallback | None = None,
        progress: bool = True,
        init_latents: torch.Tensor | None = None,
        latent: bool = False,
    ) -> torch.Tensor:
        """Denoise and decode every embedding to (N, 3, H, W) pixels in [0, 1] (with `latent`, stop at the
        (N, C, h, w) latents); with best_of > 1 keep, per group of best_of draws, the image the encoder finds
        closest to its row of `target()` ((N, D) normalised embeddings, computed only then)."""
        if scheduler_name(self.decoder.scheduler) != s.scheduler:
            self.decoder.scheduler = make_scheduler(s.scheduler, self.decoder_scheduler_config)
        latents = self.decoder(
            embeds,
            negative,
            height=self.image_size,
            width=self.image_size,
            steps=s.steps,
            guidance=s.guidance,
            generator=generator,
            init_latents=init_latents,
            strength=s.strength if init_latents is not None else 1.0,
            callback=callback,
            progress=progress,
        )
        if latent:
            return latents
        pixels = self.decoder.decode(latents)  # (N * best_of, 3, H, W) in [0, 1]
        if s.best_of == 1 or target is None:
            return pixels
        wanted = target().float().repeat_interleave(s.best_of, dim=0)  # (N * best_of, D)
        scores = (self.encoder.encode_image(_to_pil(pixels)) * wanted).sum(dim=-1)  # judged as users see them
        best = scores.view(-1, s.best_of).argmax(dim=1) + torch.arange(len(pixels) // s.best_of) * s.best_of
        return pixels[best.to(pixels.device)]

    def _settings(self, call: str, changes: dict, unused: tuple[str, ...] = ()) -> GenerationSettings:
        """The defaults with one call's settings applied (None keeps a default). A setting the call has no use for
        is an error, never silently ignored (e.g. strength outside img2img)."""
        given = sorted(name for name in unused if changes.get(name) is not None)
        if given:
            raise InvalidSettingError(f"{call} does not use {', '.join(given)}")
        return self.defaults.updated(**changes)

    def _check_embeds(self, embeds: object, what: str) -> torch.Tensor:
        """A finite (N, E) float tensor of the decoder's condition size, N >= 1."""
        dim = self.decoder.condition_dim
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or embeds.shape[0] < 1 or embeds.shape[1] != dim:
            got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise InvalidSettingError(f"{what} must be an (N, {dim}) tensor, got {got}")
        if not embeds.is_floating_point() or not bool(torch.isfinite(embeds).all()):
            raise InvalidSettingError(f"{what} must hold finite floating-point values")
        return embeds

    def _negatives(self, negative_prompt: str | Sequence[str] | None, n: int) -> list[str] | None:
        if negative_prompt is None:
            return None
        negatives = check_texts(negative_prompt, "negative prompt")
        if len(negatives) == 1:
            negatives = negatives * n
        if len(negatives) != n:
            raise InvalidTextError(f"{n} prompts but {len(negatives)} negative prompts")
        return negatives

    @staticmethod
    def _check_batch(count: int) -> None:
        if count > MAX_BATCH_IMAGES:
            raise InvalidSettingError(
                f"this call would draw {count} images (prompts x num_images x best_of); the limit is {MAX_BATCH_IMAGES}"
            )

    def _to_pixels(self, image: Image.Image) -> torch.Tensor:
        """(1, 3, S, S) pixels in [-1, 1] at the generator's size."""
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=1)
        return to_pixels([image], self.decoder.device)


def _check_output_type(output_type: object) -> None:
    if output_type not in OUTPUT_TYPES:
        raise InvalidSettingError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")


def _as_output(out: torch.Tensor, output_type: str) -> list[Image.Image] | torch.Tensor | np.ndarray:
    """Decoded (N, 3, H, W) pixels in [0, 1] (or latents) as `output_type` asks."""
    if output_type == "pil":
        return _to_pil(out)
    if output_type == "np":
        return out.float().permute(0, 2, 3, 1).cpu().numpy()
    return out.float() if output_type == "pt" else out


def _check_callback(callback: object) -> None:
    if callback is not None and not callable(callback):
        raise InvalidSettingError(f"callback must be callable (step, timestep, latents), got {type(callback).__name__}")


def _generator(seed: int) -> torch.Generator:
    """Noise always comes from a CPU generator, so a seed gives the same images on any device."""
    return torch.Generator("cpu").manual_seed(seed)


def _to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) in [0, 1] -> PIL images (rounded as diffusers' numpy_to_pil does)."""
    arrays = (pixels.float().permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in arrays]
