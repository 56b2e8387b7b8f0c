"""Early-fusion VLM: [image tokens | <bos> prompt <sep> | answer <eos>] in one sequence, prefix-LM attention; or,
as LLaVA, the image spliced in where the prompt's image token stands, with causal attention throughout."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from triptych.core.errors import WeightsError
from triptych.core.weights_files import check_fields, config_value, load_safetensors, read_json, weights_errors

from .config import DecoderConfig
from .decoder import Decoder
from .masks import positions_from_valid, prefix_lm_mask
from .projector import Projector
from .tokenizer import CAPTION_PROMPT, IMAGE_SLOT, SEP

ATTENTION = ("prefix", "causal")


@dataclass
class VLMConfig:
    """What joins an encoder to a decoder; stored under "vlm" in the folder's config.json."""

    vision_width: int
    shuffle: int = 1
    vision_layer: int = -1
    encoder: str = "shapes"
    caption_prompt: str = CAPTION_PROMPT
    sep: str = SEP
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos/eos/pad names when not the world's
    chat_template: bool = False  # prompt through the tokenizer's chat template (instruct decoders); else <bos> p <sep>
    attention: str = "prefix"  # "prefix": [image | prompt] sees itself whole (PaliGemma); "causal" (LLaVA)
    image_token: str | None = None  # the prompt token the image replaces (LLaVA's "<image>"); None: image first
    prompt_special_tokens: bool = False  # tokenize prompts with the tokenizer's own added tokens (LLaVA's <s>)
    vision_final_norm: bool = True  # the tower's final norm on the patch tokens (LLaVA reads a hidden layer raw)
    pad_to_square: bool = False  # pad images to a square of the encoder's mean colour first (LLaVA-1.5's "pad")
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.vision_width < 1 or self.shuffle < 1:
            raise ValueError(f"vision_width and shuffle must be at least 1, got {self.vision_width}, {self.shuffle}")
        names = self.special_tokens
        if set(names) - {"bos", "eos", "pad"} or not all(isinstance(v, str) and v for v in names.values()):
            raise ValueError(f"special_tokens maps bos/eos/pad to token strings, got {names!r}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.image_token is not None and not (self.image_token and self.chat_template):
            raise ValueError("image_token needs chat_template (the template places it) and must be non-empty")


class VLM(nn.Module):
    """Projector + decoder. The encoder is shared and passed in by the caller, never owned."""

    def __init__(self, cfg: VLMConfig, decoder: Decoder | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.decoder = decoder or Decoder(cfg.decoder)
        self.projector = Projector(cfg.vision_width, cfg.decoder.hidden_size, cfg.shuffle)

    def embed_text(self, ids: list[int]) -> torch.Tensor:
        table = self.decoder.model.embed_tokens
        return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))  # (T, H)

    def splice(self, image: torch.Tensor, prompt: list[int]) -> torch.Tensor:
        """(L + T, H) embeddings of one prompt with its projected image (L, H) where the prompt holds IMAGE_SLOT
        (LLaVA), else before the prompt."""
        at = prompt.index(IMAGE_SLOT) if IMAGE_SLOT in prompt else None
        if at is None:
            return torch.cat([image, self.embed_text(prompt)])
        return torch.cat([self.embed_text(prompt[:at]), image, self.embed_text(prompt[at + 1 :])])

    def prefixes(self, image_tokens: torch.Tensor, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (B, P, H) embeddings of [image | prompt ids] (or the prompt with the image spliced in) and
        their validity (B, P), for generation."""
        images = self.projector(image_tokens)  # (B, L, H)
        rows = [self.splice(img, p) for img, p in zip(images, prompts, strict=True)]
        length = max(r.shape[0] for r in rows)
        embeds = images.new_zeros(len(rows), length, images.shape[-1])
        valid = torch.zeros(len(rows), length, dtype=torch.bool, device=images.device)
        for i, r in enumerate(rows):
            embeds[i, length - r.shape[0] :] = r
            valid[i, length - r.shape[0] :] = True
        return embeds, valid

    def forward(self, image_tokens: torch.Tensor, prompts: list[list[int]], answers: list[list[int]]) -> torch.Tensor:
        """Training loss: cross-entropy over each sample's answer tokens, averaged per sample and then over the batch.

        Per-sample averaging keeps one-word answers ("yes", "three") as heavy as 25-token captions; a plain mean over
        tokens lets captions dominate the gradient and short answers go unlearned. The prefix is context only.
        """
        images = self.projector(image_tokens)  # (B, L, H)
        b, _, h = images.shape
        pairs = zip(images, prompts, answers, strict=True)
        rows = [torch.cat([self.splice(img, p), self.embed_text(a)]) for img, p, a in pairs]  # (S_i, H) each
        s = max(r.shape[0] for r in rows)
        embeds = images.new_zeros(b, s, h)
        valid = torch.zeros(b, s, dtype=torch.bool, device=images.device)
        targets = torch.full((b, s), -100, dtype=torch.long, device=images.device)
        prefix = torch.zeros(b, dtype=torch.long, device=images.device)
        for i, (row, a) in enumerate(zip(rows, answers, strict=True)):
            embeds[i, : len(row)] = row
            valid[i, : len(row)] = True
            prefix[i] = len(row) - len(a)  # image + prompt
            # the token at position t predicts the token at t + 1: the answer's tokens are predicted from
            # the last prompt token onwards
            targets[i, prefix[i] - 1 : len(row) - 1] = torch.tensor(a, device=images.device)
        if self.config.attention == "causal":
            prefix = torch.zeros_like(prefix)  # no bidirectional prefix: every token sees only what precedes it
        logits = self.decoder(
            inputs_embeds=embeds, positions=positions_from_valid(valid), mask=prefix_lm_mask(valid, prefix)
        )
        # (B, S): zero where the target is ignored
        token_loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
        answer_tokens = (targets != -100).sum(dim=1).clamp(min=1)  # (B,)
        return (token_loss.sum(dim=1) / answer_tokens).mean()

    # ------------------------------------------------------------------ files
    def save_pretrained(
        self, folder: str | Path, dtype: torch.dtype | None = torch.float16, encoder: str | None = None
    ) -> None:
        """config.json (Llama decoder config + "vlm"), model.safetensors (decoder + projector.*); `encoder`
        replaces the config's encoder name."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = self.config.decoder.to_hf()
        data["vlm"] = {k: v for k, v in asdict(self.config).items() if k != "decoder"}
        if encoder is not None:
            data["vlm"]["encoder"] = encoder
        (folder / "config.json").write_text(json.dumps(data, indent=1) + "\n")
        state = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in self.state_dict().items()}
        state = {k.removeprefix("decoder."): v for k, v in state.items()}
        if self.config.decoder.tie_word_embeddings:
            state.pop("lm_head.weight")
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> VLM:
        folder = Path(folder)
        path = folder / "config.json"
        data = read_json(path)
        if "vlm" not in data:
            raise WeightsError(f"{path} has no 'vlm' section: not a VLM folder")
        with weights_errors(path):
            cfg = VLMConfig(**config_value(data, "vlm", dict, path), decoder=DecoderConfig.from_hf(data))
        state = load_safetensors(folder / "model.safetensors")
        state = {(k if k.startswith("projector.") else f"decoder.{k}"): v for k, v in state.items()}
        return cls(cfg).load_checked(state, folder)

    def load_checked(self, state: dict[str, torch.Tensor], folder: Path) -> VLM:
        """Load `state` (our names), every weight accounted for (a tied lm_head may be absent); WeightsError
        naming `folder` otherwise."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        tied = self.config.decoder.tie_word_embeddings
        missing = [k for k in missing if not (tied and k == "decoder.lm_head.weight")]
        if missing or unexpected:
            raise WeightsError(
                f"{folder}: weights do not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return self
