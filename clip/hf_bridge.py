"""Hugging Face CLIP folders -> open_clip models, so one Encoder class serves both.

Two layouts are read: a `CLIPModel` folder (config.json with model_type "clip"), and the split layout Kandinsky
2.2's prior repository ships (`text_encoder/` CLIPTextModelWithProjection, `image_encoder/`
CLIPVisionModelWithProjection, `tokenizer/`, `image_processor/`). The weights are renamed into open_clip's
native CLIP (q/k/v fused into in_proj, projections transposed); the tokenizer stays the repository's own, so
the prior sees exactly the token ids, states and embeddings it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import image_transform

from triptych.core.errors import WeightsError
from triptych.core.weights_files import config_value, read_json, read_safetensors

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LEGACY_EOS_ID = 2  # transformers' CLIP pools at argmax(input_ids) when the config says eos_token_id == 2


@dataclass(frozen=True)
class HFClipFolders:
    """Where a Hugging Face CLIP's parts live (text and vision may be the same CLIPModel folder)."""

    text: Path
    vision: Path
    tokenizer: Path
    image_processor: Path | None
    kind: str = "clip"  # or "siglip" (a SiglipModel folder: see hf_siglip.py)


def find_hf_clip(folder: Path) -> HFClipFolders | None:
    """The HF CLIP layout in `folder`, or None when it holds none."""
    if (folder / "text_encoder" / "config.json").is_file() and (folder / "image_encoder" / "config.json").is_file():
        processor = folder / "image_processor"
        return HFClipFolders(
            folder / "text_encoder",
            folder / "image_encoder",
            folder / "tokenizer",
            processor if (processor / "preprocessor_config.json").is_file() else None,
        )
    config = folder / "config.json"
    model_type = read_json(config).get("model_type") if config.is_file() else None
    if model_type in ("clip", "siglip"):
        processor = folder if (folder / "preprocessor_config.json").is_file() else None
        return HFClipFolders(folder, folder, folder, processor, kind=model_type)
    return None


def _sub_config(folder: Path, part: str) -> dict:
    """The text or vision config of a CLIPModel, CLIPTextModelWithProjection or CLIPVisionModelWithProjection."""
    path = folder / "config.json"
    data = read_json(path)
    if data.get("model_type") == "clip":
        sub = config_value(data, f"{part}_config", dict, path)
        return {**sub, "projection_dim": data.get("projection_dim", 512)}
    return data


def _check(config: dict, where: Path) -> bool:
    """quick_gelu or not; refuse what open_clip's native CLIP cannot express."""
    act = config.get("hidden_act", "quick_gelu")
    if act not in ("gelu", "quick_gelu"):
        raise WeightsError(f"{where}: hidden_act {act!r} is not supported (gelu or quick_gelu)")
    return act == "quick_gelu"


def build_open_clip(text: dict, vision: dict, *, where: Path) -> CLIP:
    """An open_clip CLIP with the shapes of the two HF configs."""
    quick_gelu = _check(text, where)
    if _check(vision, where) != quick_gelu:
        raise WeightsError(f"{where}: the text and vision towers use different activations")
    if text["projection_dim"] != vision["projection_dim"]:
        raise WeightsError(f"{where}: text and vision projections differ in width")
    eos = text.get("eos_token_id", LEGACY_EOS_ID)
    pool = {"pool_type": "argmax"} if eos == LEGACY_EOS_ID else {"pool_type": "eos", "eos_id": eos}
    text_cfg = CLIPTextCfg(
        context_length=text.get("max_position_embeddings", 77),
        vocab_size=text["vocab_size"],
        width=text["hidden_size"],
        heads=text["num_attention_heads"],
        layers=text["num_hidden_layers"],
        mlp_ratio=text["intermediate_size"] / text["hidden_size"],
        norm_kwargs={"eps": text.get("layer_norm_eps", 1e-5)},
        **pool,
    )
    return CLIP(text["projection_dim"], vision_cfg(vision), text_cfg, quick_gelu=quick_gelu)


def _blocks(state: dict[str, torch.Tensor], src: str, dst: str, layers: int) -> dict[str, torch.Tensor]:
    """HF encoder layers -> open_clip resblocks (q, k, v stacked into in_proj)."""
    out = {}
    for i in range(layers):
        s, d = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{d}.attn.in_proj_{kind}"] = torch.cat([state[f"{s}.self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[f"{d}.attn.out_proj.{kind}"] = state[f"{s}.self_attn.out_proj.{kind}"]
            out[f"{d}.ln_1.{kind}"] = state[f"{s}.layer_norm1.{kind}"]
            out[f"{d}.ln_2.{kind}"] = state[f"{s}.layer_norm2.{kind}"]
            out[f"{d}.mlp.c_fc.{kind}"] = state[f"{s}.mlp.fc1.{kind}"]
            out[f"{d}.mlp.c_proj.{kind}"] = state[f"{s}.mlp.fc2.{kind}"]
    return out


def convert_vision_tower(state: dict[str, torch.Tensor], layers: int, src: str = "vision_model") -> dict:
    """An HF CLIP vision tower (`{src}.*`) -> open_clip's `visual.*` names, the projection left out (LLaVA's
    tower has none)."""
    return {
        "visual.class_embedding": state[f"{src}.embeddings.class_embedding"],
        "visual.conv1.weight": state[f"{src}.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": state[f"{src}.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": state[f"{src}.pre_layrnorm.weight"],
        "visual.ln_pre.bias": state[f"{src}.pre_layrnorm.bias"],
        "visual.ln_post.weight": state[f"{src}.post_layernorm.weight"],
        "visual.ln_post.bias": state[f"{src}.post_layernorm.bias"],
        **_blocks(state, src, "visual.transformer", layers),
    }


def convert_state_dict(state: dict[str, torch.Tensor], text_layers: int, vision_layers: int) -> dict[str, torch.Tensor]:
    """HF CLIP weights (text_model.*, vision_model.*, text_projection, visual_projection[, logit_scale]) ->
    open_clip CLIP names."""
    t = "text_model"
    out = {
        "token_embedding.weight": state[f"{t}.embeddings.token_embedding.weight"],
        "positional_embedding": state[f"{t}.embeddings.position_embedding.weight"],
        "ln_final.weight": state[f"{t}.final_layer_norm.weight"],
        "ln_final.bias": state[f"{t}.final_layer_norm.bias"],
        "text_projection": state["text_projection.weight"].T,  # (width, D): open_clip multiplies x @ proj
        "visual.proj": state["visual_projection.weight"].T,  # (width, D)
        **_blocks(state, t, "transformer", text_layers),
        **convert_vision_tower(state, vision_layers),
    }
    if "logit_scale" in state:
        out["logit_scale"] = state["logit_scale"].reshape(())
    return out


def vision_cfg(vision: dict) -> CLIPVisionCfg:
    """open_clip's config for an HF CLIP vision config."""
    return CLIPVisionCfg(
        layers=vision["num_hidden_layers"],
        width=vision["hidden_size"],
        head_width=vision["hidden_size"] // vision["num_attention_heads"],
        mlp_ratio=vision["intermediate_size"] / vision["hidden_size"],
        patch_size=vision["patch_size"],
        image_size=vision["image_size"],
        norm_kwargs={"eps": vision.get("layer_norm_eps", 1e-5)},
    )


def build_vision_tower(vision: dict, *, where: Path) -> torch.nn.Module:
    """An open_clip vision tower alone (no projection used) with the shape of an HF CLIP vision config."""
    from open_clip.model import _build_vision_tower

    quick_gelu = _check(vision, where)
    return _build_vision_tower(vision.get("projection_dim", vision["hidden_size"]), vision_cfg(vision), quick_gelu)


def processor_transform(settings: dict, size: int, resize_mode: str = "shortest"):
    """The eval transform of an image processor's settings (mean/std): CLIP's resizes the short side and crops the
    centre ("shortest"); SigLIP's resizes to the square ("squash")."""
    mean, std = tuple(settings.get("image_mean", OPENAI_MEAN)), tuple(settings.get("image_std", OPENAI_STD))
    return image_transform(size, is_train=False, mean=mean, std=std, resize_mode=resize_mode, interpolation="bicubic")


class HFTokenizer:
    """The repository's own CLIP tokenizer as open_clip's tokenizer call: texts -> (N, context) ids, padded and
    truncated to the context as Kandinsky's prior pipeline does. `attention_mask` marks the real tokens, since
    the pad id may equal the end-of-text id."""

    def __init__(self, folder: Path, context_length: int) -> None:
        from transformers import CLIPTokenizer  # vocab.json + merges.txt: no code is run from the folder

        if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
            raise WeightsError(f"{folder} needs vocab.json and merges.txt (a CLIP tokenizer)")
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder))
        self.context_length = context_length

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(
            texts, padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        )["input_ids"]

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, context) ids -> True for the real tokens: everything up to and including the first end token
        (the tokenizer's own attention mask, read off the ids instead of tokenizing twice)."""
        first_end = (tokens == self.tokenizer.eos_token_id).int().argmax(dim=-1)  # (N,)
        return torch.arange(tokens.shape[1], device=tokens.device)[None] <= first_end[:, None]


def load_hf_clip(folders: HFClipFolders) -> tuple[CLIP, object, HFTokenizer]:
    """(fp32 open_clip model, eval preprocess, tokenizer) from an HF CLIP layout (SigLIP: hf_siglip.py)."""
    for needed in (folders.text / "config.json", folders.vision / "config.json"):
        if not needed.is_file():
            raise WeightsError(f"{needed} is missing")
    text, vision = _sub_config(folders.text, "text"), _sub_config(folders.vision, "vision")
    model = build_open_clip(text, vision, where=folders.text.parent)
    state = read_safetensors(folders.text, "model")
    if folders.vision != folders.text:
        state.update(read_safetensors(folders.vision, "model"))
    try:
        converted = convert_state_dict(state, text["num_hidden_layers"], vision["num_hidden_layers"])
    except KeyError as err:
        raise WeightsError(f"{folders.text.parent}: a CLIP weight is missing: {err}") from err
    if "logit_scale" not in converted:
        converted["logit_scale"] = torch.tensor(math.log(1 / 0.07))  # split towers carry none: CLIP's init
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{folders.text.parent}: weights do not fit (missing {missing[:5]}, extra {unexpected[:5]})")
    processor = folders.image_processor
    settings = read_json(processor / "preprocessor_config.json") if processor is not None else {}
    preprocess = processor_transform(settings, vision["image_size"])
    return model, preprocess, HFTokenizer(folders.tokenizer, text.get("max_position_embeddings", 77))
