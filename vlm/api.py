"""`vlm.load` and the Captioner: caption images, answer questions, stream answers — on the shared encoder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from PIL import Image

from triptych import clip
from triptych.core.checkpoint import export_folder
from triptych.core.checks import check_batch_size, check_texts
from triptych.core.devices import resolve_device, resolve_dtype
from triptych.core.errors import InvalidImageError, InvalidSettingError, InvalidTextError, WeightsError
from triptych.core.images import ImageInput, load_images
from triptych.core.manifest import MANIFEST, verify_manifest
from triptych.core.model_card import current_card, write_card
from triptych.core.resolve import Parts, resolve
from triptych.core.weights_files import check_folder

from .generate import GenerationConfig, Generator
from .llava import is_llava_folder, load_llava, vision_encoder
from .model import VLM
from .tokenizer import TextCodec
from .vision import image_tokens


class Captioner:
    """A VLM joined to a shared encoder. Defaults decode greedily with up to 64 new tokens."""

    def __init__(self, vlm: VLM, encoder: clip.Encoder, codec: TextCodec, name: str, compile: bool = False) -> None:
        self.vlm, self.encoder, self.codec, self.name = vlm.eval().requires_grad_(False), encoder, codec, name
        prefix = vlm.config.attention == "prefix"
        self.generator = Generator(self.vlm.decoder, codec.eos_id, codec.decode, compiled=compile, prefix=prefix)
        blank = Image.new("RGB", (encoder.image_size, encoder.image_size))
        patches = image_tokens(encoder, [blank], vlm.config).shape[1]
        self.image_tokens = patches // vlm.config.shuffle**2  # positions the image takes in every sequence

    def __repr__(self) -> str:
        return f"Captioner({self.name!r}, encoder={self.encoder.name!r}, device={self.encoder.device})"

    def _prompt_ids(self, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
        cfg = self.vlm.config
        budget = cfg.decoder.max_position_embeddings - self.image_tokens - max_new_tokens
        out = []
        for i, prompt in enumerate(prompts):
            ids = self.codec.prompt_ids(prompt, cfg.sep, cfg.chat_template, cfg.image_token, cfg.prompt_special_tokens)
            if len(ids) > budget:
                raise InvalidTextError(f"prompt #{i} is {len(ids)} tokens; the limit is {budget}")
            out.append(ids)
        return out

    @torch.inference_mode()
    def _prefixes(self, images: list, prompts: list[str], max_new_tokens: int):
        tokens = image_tokens(self.encoder, images, self.vlm.config)  # (B, L, width)
        tokens = tokens.to(next(self.vlm.parameters()).dtype)
        return self.vlm.prefixes(tokens, self._prompt_ids(prompts, max_new_tokens))

    def ask(
        self,
        images: ImageInput | Iterable[ImageInput],
        questions: str | Iterable[str],
        batch_size: int = 32,
        **generation,
    ) -> list[str]:
        """One answer per (image, question) pair; one question is asked of every image. `generation`: the
        settings of GenerationConfig (an unknown name is an InvalidSettingError)."""
        cfg = GenerationConfig.from_kwargs(**generation)
        batch_size = check_batch_size(batch_size)
        images = load_images(images)
        questions = check_texts(questions, "question")
        if len(questions) == 1:
            questions = questions * len(images)
        if len(questions) != len(images):
            raise InvalidTextError(f"{len(images)} images but {len(questions)} questions")
        answers: list[str] = []
        for i in range(0, len(images), batch_size):
            embeds, valid = self._prefixes(
                images[i : i + batch_size], questions[i : i + batch_size], cfg.max_new_tokens
            )
            answers += self.generator.generate(embeds, valid, cfg)
        return answers

    def caption(self, images: ImageInput | Iterable[ImageInput], **generation) -> list[str]:
        """A caption per image (the model's caption prompt)."""
        return self.ask(images, self.vlm.config.caption_prompt, **generation)

    def stream(self, image: ImageInput, prompt: str | None = None, **generation) -> Iterator[str]:
        """Text pieces of one answer (or caption, without a prompt) as they are decoded. One image and one prompt:
        more of either is an error (they would not be streamed). Inputs are checked when the call is made; the
        models run only as pieces are asked for (so a caller can hold a lock per piece)."""
        cfg = GenerationConfig.from_kwargs(**generation)
        images = load_images(image)
        if len(images) != 1:
            raise InvalidImageError(f"stream takes one image, got {len(images)}; use ask or caption for several")
        prompts = [self.vlm.config.caption_prompt] if prompt is None else check_texts(prompt, "prompt")
        if len(prompts) != 1:
            raise InvalidTextError(f"stream takes one prompt, got {len(prompts)}")
        return self._stream(images, prompts, cfg)

    def stream_many(
        self, images: Iterable[ImageInput], prompts: Iterable[str | None], **generation
    ) -> Iterator[list[str]]:
        """Each pair's answer so far (None as a prompt: the caption), after every decoding step, for a batch of
        (image, prompt) pairs decoded together: what a server streams to several clients at once. Inputs are
        checked when the call is made."""
        cfg = GenerationConfig.from_kwargs(**generation)
        images = load_images(images)
        prompts = [self.vlm.config.caption_prompt if p is None else check_texts(p, "prompt")[0] for p in prompts]
        if len(prompts) != len(images):
            raise InvalidTextError(f"{len(images)} images but {len(prompts)} prompts")
        if cfg.num_beams > 1:
            raise InvalidSettingError("beam search cannot stream: its best sequence is known only at the end")
        self._prompt_ids(prompts, cfg.max_new_tokens)  # a prompt too long for the context fails here, alone
        return self._stream_many(images, prompts, cfg)

    def _stream_many(self, images: list[Image.Image], prompts: list[str], cfg: GenerationConfig):
        embeds, valid = self._prefixes(images, prompts, cfg.max_new_tokens)
        yield from self.generator.stream_texts(embeds, valid, cfg)

    def save_pretrained(self, folder: str | Path, encoder: str | None = None) -> Path:
        """Write the VLM as a folder `vlm.load` reads back: config.json (Llama decoder config + "vlm"),
        model.safetensors (decoder + projector.*, in the current dtype), the tokenizer files and
        generation_config.json, a sha256 manifest; `encoder`: the name config.json gives its encoder (default:
        the one it was trained with). Written whole into place."""
        with export_folder(Path(folder)) as tmp:
            self.vlm.save_pretrained(tmp, dtype=None, encoder=encoder)
            self.codec.save(tmp, self.vlm.config.decoder.max_position_embeddings)
            summary = f"A VLM saved by triptych from {self.name}: captions and answers."
            write_card(tmp, "vlm", name=Path(folder).name, summary=summary, keep_from=current_card(folder))
        return Path(folder)

    def save_decoder(self, folder: str | Path) -> Path:
        """Write the language model alone as a Llama-family folder (config.json, model.safetensors, tokenizer
        files, generation_config.json): transformers' LlamaForCausalLM / AutoModelForCausalLM and AutoTokenizer
        load it. Text only: the image tokens need our projector and encoder."""
        with export_folder(Path(folder)) as tmp:
            self.vlm.decoder.save_pretrained(tmp)
            self.codec.save(tmp, self.vlm.config.decoder.max_position_embeddings)
            summary = f"The language model of the triptych VLM {self.name}, alone (text only)."
            write_card(tmp, "decoder", name=Path(folder).name, summary=summary, keep_from=current_card(folder))
        return Path(folder)

    def _stream(self, images: list[Image.Image], prompts: list[str], cfg: GenerationConfig) -> Iterator[str]:
        embeds, valid = self._prefixes(images, prompts, cfg.max_new_tokens)
        yield from self.generator.stream(embeds, valid, cfg)


def load(
    name: str | Parts = "shapes",
    encoder: clip.Encoder | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compile: bool = False,
    offload: bool = False,
) -> Captioner:
    """Load a VLM ("shapes", a VLM folder: config.json + model.safetensors + tokenizer.json, a transformers
    llava-hf folder, a LLaVA preset, or a folder in our layout with vlm/; see triptych.core.resolve) onto an
    encoder.

    Pass the encoder already in use to share it; otherwise the one the VLM was trained with is loaded.
    `compile`: decode with a torch.compile'd static-shape step (faster per token; the first caption of each
    batch size and length bucket waits for the compiler). `offload` (when the encoder is loaded here): models
    stay on the CPU and each moves to the GPU only while it runs.
    """
    parts = resolve(name)
    name, folder = parts.name, Path(parts.require("vlm"))
    if (folder / MANIFEST).is_file():
        verify_manifest(folder)
    check_folder(folder)
    llava = load_llava(folder) if is_llava_folder(folder) else None
    model = llava.vlm if llava else VLM.from_pretrained(folder)
    codec = TextCodec.load(folder, **model.config.special_tokens)
    if model.config.chat_template:
        codec.require_chat_template(folder / "config.json")
    if llava is not None:  # the preset's CLIP when the name has one; the VLM's patch tokens from the same tower
        if encoder is None and parts.encoder is not None:
            encoder = clip.load(parts, device=device, dtype=dtype, offload=offload)
        encoder = vision_encoder(llava, encoder, device, dtype, offload)
    if encoder is None:
        encoder = clip.load(model.config.encoder, device=device, dtype=dtype, offload=offload)
    dev = encoder.device if device is None else resolve_device(device)
    dt = encoder.dtype if dtype is None else resolve_dtype(dtype, dev)
    if encoder.vision_width != model.config.vision_width:
        raise WeightsError(
            f"the encoder's patch tokens are {encoder.vision_width} wide; this VLM expects {model.config.vision_width}"
        )
    if compile and encoder.placement.offload:
        raise ValueError("compile=True needs the VLM resident on its device; it does not combine with offload")
    model = model.to(encoder.placement.load_device if dev == encoder.device else dev, dt)
    encoder.placement.register("vlm", model)
    return Captioner(model, encoder, codec, name, compile=compile)
