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


# --------------------------------------------------------------------------- LLaVA-1.5 in the llava-hf layout
LLAVA_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf's conversation format: "USER: <image>\n{text} ASSISTANT:"
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_TEXT = (  # every word the LLaVA tests say, so a tiny word-level vocabulary covers them
    "USER ASSISTANT : . , ? - what colour is the shape how many objects are there a red blue green circle square "
    "star triangle provide one sentence caption for provided image left right top bottom large small and of in"
)
LLAVA_WORDS = LLAVA_TEXT.split()
LLAVA_CLIP_SIZE, LLAVA_PATCH = 28, 7  # 16 patch tokens


def llava_tokenizer():
    """A Llama-style tokenizer.json: <unk> <s> </s> first, a word vocabulary, the added <image> and <pad>, and a
    post-processor that puts <s> in front (as Llama's does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *LLAVA_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<image>", "<pad>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def make_llava_preset(root: Path, seed: int = 0, family: str = "llama", same_tower: bool = True) -> dict:
    """`triptych download llava-1.5-7b --to root` in miniature: root/clip-vit-large-patch14-336 (a transformers
    CLIPModel folder) and root/llava-1.5-7b-hf (LlavaForConditionalGeneration, its vision tower the CLIP's image
    tower unless `same_tower` is False, saved by transformers with the processor, tokenizer and chat template).
    Returns the reference models and processor."""
    from transformers import (
        AutoConfig,
        CLIPConfig,
        CLIPModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessor,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    clip_folder, llava_folder = root / "clip-vit-large-patch14-336", root / "llava-1.5-7b-hf"
    tokenizer = write_clip_tokenizer(clip_folder)
    text_cfg, vision_cfg = clip_configs(len(tokenizer), act="quick_gelu")
    vision_cfg.image_size, vision_cfg.patch_size = LLAVA_CLIP_SIZE, LLAVA_PATCH
    clip_model = CLIPModel(CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict())).eval()
    clip_model.save_pretrained(clip_folder)
    mean_std = dict(image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    processor_size = dict(size={"shortest_edge": LLAVA_CLIP_SIZE}, crop_size=LLAVA_CLIP_SIZE, **mean_std)
    CLIPImageProcessor(**processor_size).save_pretrained(clip_folder)

    llm_tokenizer = llava_tokenizer()
    text = AutoConfig.for_model(
        family,
        vocab_size=len(llm_tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    text.pad_token_id = text.bos_token_id = text.eos_token_id = None
    image_token = llm_tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(vision_config=vision_cfg, text_config=text, image_token_index=image_token)
    llava = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a missed weight would show
        for name, p in llava.named_parameters():
            if "language_model" in name and "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias") and "projector" in name:
                p.normal_(0, 0.5)
        tower = llava.model.vision_tower
        source = clip_model.vision_model.state_dict()
        own = tower.vision_model if hasattr(tower, "vision_model") else tower
        own.load_state_dict({k: v.clone() for k, v in source.items()})
        if not same_tower:
            own.encoder.layers[0].mlp.fc1.weight.add_(0.01)
    llava.generation_config.eos_token_id = llm_tokenizer.eos_token_id
    llava.generation_config.pad_token_id = llm_tokenizer.pad_token_id
    llava.save_pretrained(llava_folder)
    image_processor = LlavaImageProcessor(do_pad=True, **processor_size)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=llm_tokenizer,
        patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(llava_folder)
    return dict(clip=clip_model, llava=llava, processor=processor, clip_folder=clip_folder, llava_folder=llava_folder)
