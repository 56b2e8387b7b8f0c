"""Tiny random models in the public formats (transformers CLIP, a CLIP BPE tokenizer, Kandinsky 2.2's prior and
decoder repositories), saved exactly as the hub lays them out, for parity tests against the reference code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, PriorTransformer, UnCLIPScheduler
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from tests.tiny_diffusion import tiny_recipe
from triptych.diffusion.models import build_unet, build_vae

WIDTH = 32  # text width = embedding width, as the Kandinsky prior needs
IMAGE_SIZE = 32


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's byte -> printable character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer (vocab.json + merges.txt) with a few merges; end-of-text is the last id."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    merges = [("c", "i"), ("ci", "r"), ("cir", "c"), ("r", "e"), ("re", "d</w>"), ("e", "d</w>")]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def clip_configs(vocab_size: int, act: str = "gelu", eos_token_id: int = 2) -> tuple[CLIPTextConfig, CLIPVisionConfig]:
    common = dict(hidden_size=WIDTH, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2)
    text = CLIPTextConfig(
        vocab_size=vocab_size,
        max_position_embeddings=16,
        projection_dim=WIDTH,
        hidden_act=act,
        eos_token_id=eos_token_id,
        **common,
    )
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=8, projection_dim=WIDTH, hidden_act=act, **common)
    return text, vision


def make_kandinsky_prior_repo(folder: Path, seed: int = 0, eos_token_id: int = 2) -> dict:
    """`kandinsky-2-2-prior` as on the hub: image_encoder/, text_encoder/, tokenizer/, prior/, scheduler/,
    image_processor/. Returns the loaded components (for building diffusers' pipeline)."""
    torch.manual_seed(seed)
    tokenizer = write_clip_tokenizer(folder / "tokenizer")
    text_cfg, vision_cfg = clip_configs(len(tokenizer), eos_token_id=eos_token_id)
    text_encoder = CLIPTextModelWithProjection(text_cfg).eval()
    image_encoder = CLIPVisionModelWithProjection(vision_cfg).eval()
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        embedding_dim=WIDTH,
        num_embeddings=16,
        additional_embeddings=4,
    )
    with torch.no_grad():  # a real prior has non-trivial normalisation statistics
        prior.clip_mean.normal_(0, 0.5)
        prior.clip_std.uniform_(0.5, 1.5)
    prior.eval()
    scheduler = UnCLIPScheduler(
        variance_type="fixed_small_log", prediction_type="sample", clip_sample=True, clip_sample_range=10.0
    )
    processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE)
    text_encoder.save_pretrained(folder / "text_encoder")
    image_encoder.save_pretrained(folder / "image_encoder")
    prior.save_pretrained(folder / "prior")
    scheduler.save_pretrained(folder / "scheduler")
    processor.save_pretrained(folder / "image_processor")
    return dict(
        prior=prior,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        image_processor=processor,
    )


def make_kandinsky_decoder_repo(folder: Path, seed: int = 1) -> dict:
    """`kandinsky-2-2-decoder` as on the hub: unet/, movq/, scheduler/ (DDPM)."""
    recipe = tiny_recipe("unused")
    torch.manual_seed(seed)
    movq = build_vae(recipe["vae"]["model"]).eval()
    unet = build_unet(recipe["decoder"]["model"], embed_dim=WIDTH, latent_channels=4, sample_size=16).eval()
    scheduler = DDPMScheduler(**recipe["decoder"]["scheduler"])
    unet.save_pretrained(folder / "unet")
    movq.save_pretrained(folder / "movq")
    scheduler.save_pretrained(folder / "scheduler")
    return dict(unet=unet, movq=movq, scheduler=scheduler)
