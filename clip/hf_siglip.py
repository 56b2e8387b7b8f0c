"""transformers `SiglipModel` folders -> open_clip's SigLIP (a timm ViT with attention-pool head, and open_clip's
text transformer pooling the last token), so `clip.load` reads google/siglip-* folders as open_clip's own SigLIP
and the Encoder scores them as SigLIP was trained: an independent sigmoid per label with the learned bias.

The weights are renamed (q/k/v fused for open_clip's text blocks and timm's vision blocks; the pooling head's
`nn.MultiheadAttention` split into timm's latent query and key-value projections). GELUs are the tanh
approximation, as the checkpoints were trained. The tokenizer is the folder's `tokenizer.json`, padded to the
model's length (SigLIP pools the last position, so it was trained on padded text).
"""

from __future__ import annotations

from pathlib import Path

import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

from triptych.core.errors import WeightsError
from triptych.core.weights_files import config_value, read_json, read_safetensors

from .hf_bridge import HFClipFolders, _blocks, processor_transform

TIMM_SIGLIP = "vit_base_patch16_siglip_224"  # any timm SigLIP name: the trunk is rebuilt to the folder's shape
GELU_TANH = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def _tower_configs(folder: Path) -> tuple[dict, dict]:
    path = folder / "config.json"
    data = read_json(path)
    from transformers import SiglipTextConfig, SiglipVisionConfig

    # hub configs list only what differs from the defaults (google/siglip-base-patch16-224 names five text keys)
    text = {**SiglipTextConfig().to_dict(), **config_value(data, "text_config", dict, path)}
    vision = {**SiglipVisionConfig().to_dict(), **config_value(data, "vision_config", dict, path)}
    for part, cfg in (("text", text), ("vision", vision)):
        if cfg.get("hidden_act", "gelu_pytorch_tanh") not in GELU_TANH:
            raise WeightsError(f"{path}: {part} hidden_act {cfg['hidden_act']!r} is not supported (tanh GELU)")
    if vision.get("vision_use_head", True) is not True:
        raise WeightsError(f"{path}: a SigLIP vision tower without its attention-pool head is not supported")
    return text, vision


def build_siglip(text: dict, vision: dict) -> CustomTextCLIP:
    """An open_clip SigLIP with the shapes of the HF configs (the pooled text width is the embedding width)."""
    import timm

    width = text["hidden_size"]
    text_cfg = CLIPTextCfg(
        context_length=text.get("max_position_embeddings", 64),
        vocab_size=text["vocab_size"],
        width=width,
        heads=text["num_attention_heads"],
        layers=text["num_hidden_layers"],
        mlp_ratio=text["intermediate_size"] / width,
        no_causal_mask=True,
        proj_bias=True,
        pool_type="last",
        act_kwargs={"approximate": "tanh"},
        norm_kwargs={"eps": text.get("layer_norm_eps", 1e-6)},
    )
    vision_cfg = CLIPVisionCfg(
        image_size=vision["image_size"], timm_model_name=TIMM_SIGLIP, timm_pool="map", timm_proj="none"
    )
    embed_dim = text.get("projection_size", width)
    model = CustomTextCLIP(embed_dim, vision_cfg, text_cfg, init_logit_bias=-10.0)
    model.visual.trunk = timm.create_model(
        TIMM_SIGLIP,
        pretrained=False,
        num_classes=0,
        img_size=vision["image_size"],
        patch_size=vision["patch_size"],
        embed_dim=vision["hidden_size"],
        depth=vision["num_hidden_layers"],
        num_heads=vision["num_attention_heads"],
        mlp_ratio=vision["intermediate_size"] / vision["hidden_size"],
        act_layer="gelu_tanh",
    )
    return model


def _vision_blocks(state: dict, layers: int) -> dict:
    out = {}
    for i in range(layers):
        s, d = f"vision_model.encoder.layers.{i}", f"visual.trunk.blocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{d}.attn.qkv.{kind}"] = torch.cat([state[f"{s}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[f"{d}.attn.proj.{kind}"] = state[f"{s}.self_attn.out_proj.{kind}"]
            out[f"{d}.norm1.{kind}"] = state[f"{s}.layer_norm1.{kind}"]
            out[f"{d}.norm2.{kind}"] = state[f"{s}.layer_norm2.{kind}"]
            out[f"{d}.mlp.fc1.{kind}"] = state[f"{s}.mlp.fc1.{kind}"]
            out[f"{d}.mlp.fc2.{kind}"] = state[f"{s}.mlp.fc2.{kind}"]
    return out


def convert_siglip(state: dict[str, torch.Tensor], text_layers: int, vision_layers: int) -> dict[str, torch.Tensor]:
    """HF SiglipModel weights -> open_clip CustomTextCLIP (timm trunk) names."""
    t, v, head = "text_model", "vision_model", "vision_model.head"
    width = state[f"{head}.probe"].shape[-1]
    in_proj_w, in_proj_b = state[f"{head}.attention.in_proj_weight"], state[f"{head}.attention.in_proj_bias"]
    patches = state[f"{v}.embeddings.position_embedding.weight"]
    return {
        "text.token_embedding.weight": state[f"{t}.embeddings.token_embedding.weight"],
        "text.positional_embedding": state[f"{t}.embeddings.position_embedding.weight"],
        "text.ln_final.weight": state[f"{t}.final_layer_norm.weight"],
        "text.ln_final.bias": state[f"{t}.final_layer_norm.bias"],
        "text.text_projection.weight": state[f"{t}.head.weight"],
        "text.text_projection.bias": state[f"{t}.head.bias"],
        **_blocks(state, "text_model", "text.transformer", text_layers),
        "visual.trunk.patch_embed.proj.weight": state[f"{v}.embeddings.patch_embedding.weight"],
        "visual.trunk.patch_embed.proj.bias": state[f"{v}.embeddings.patch_embedding.bias"],
        "visual.trunk.pos_embed": patches[None],  # (1, patches, width)
        "visual.trunk.norm.weight": state[f"{v}.post_layernorm.weight"],
        "visual.trunk.norm.bias": state[f"{v}.post_layernorm.bias"],
        "visual.trunk.attn_pool.latent": state[f"{head}.probe"],
        "visual.trunk.attn_pool.q.weight": in_proj_w[:width],
        "visual.trunk.attn_pool.q.bias": in_proj_b[:width],
        "visual.trunk.attn_pool.kv.weight": in_proj_w[width:],
        "visual.trunk.attn_pool.kv.bias": in_proj_b[width:],
        "visual.trunk.attn_pool.proj.weight": state[f"{head}.attention.out_proj.weight"],
        "visual.trunk.attn_pool.proj.bias": state[f"{head}.attention.out_proj.bias"],
        "visual.trunk.attn_pool.norm.weight": state[f"{head}.layernorm.weight"],
        "visual.trunk.attn_pool.norm.bias": state[f"{head}.layernorm.bias"],
        "visual.trunk.attn_pool.mlp.fc1.weight": state[f"{head}.mlp.fc1.weight"],
        "visual.trunk.attn_pool.mlp.fc1.bias": state[f"{head}.mlp.fc1.bias"],
        "visual.trunk.attn_pool.mlp.fc2.weight": state[f"{head}.mlp.fc2.weight"],
        "visual.trunk.attn_pool.mlp.fc2.bias": state[f"{head}.mlp.fc2.bias"],
        **_vision_blocks(state, vision_layers),
        "logit_scale": state["logit_scale"].reshape(()),
        "logit_bias": state["logit_bias"].reshape(()),
    }


class SiglipTokenizer:
    """The folder's tokenizer.json as open_clip's tokenizer call: texts -> (N, context) ids, padded to the context
    (and truncated), as SigLIP's processor pads."""

    def __init__(self, folder: Path, context_length: int) -> None:
        from transformers import PreTrainedTokenizerFast

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise WeightsError(f"{path} is missing (a SigLIP folder's tokenizer; sentencepiece files are not read)")
        config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        pad = config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(path), pad_token=pad if isinstance(pad, str) else None
        )
        if self.tokenizer.pad_token is None:
            raise WeightsError(f"{folder}: the tokenizer has no pad token (tokenizer_config.json 'pad_token')")
        self.context_length = context_length

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(
            texts, padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        )["input_ids"]


SIGLIP_MEAN_STD = {"image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5)}  # SigLIP's processor default


def load_hf_siglip(folders: HFClipFolders) -> tuple[CustomTextCLIP, object, SiglipTokenizer]:
    """(fp32 open_clip SigLIP, eval preprocess, tokenizer) from a SiglipModel folder."""
    folder = folders.text
    text, vision = _tower_configs(folder)
    model = build_siglip(text, vision)
    state = read_safetensors(folder, "model")
    try:
        converted = convert_siglip(state, text["num_hidden_layers"], vision["num_hidden_layers"])
    except KeyError as err:
        raise WeightsError(f"{folder}: a SigLIP weight is missing: {err}") from err
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{folder}: weights do not fit (missing {missing[:5]}, extra {unexpected[:5]})")
    processor = folders.image_processor
    settings = read_json(processor / "preprocessor_config.json") if processor is not None else {}
    preprocess = processor_transform({**SIGLIP_MEAN_STD, **settings}, vision["image_size"], "squash")
    return model, preprocess, SiglipTokenizer(folder, text.get("max_position_embeddings", 64))
