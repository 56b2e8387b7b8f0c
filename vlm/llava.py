"""LLaVA checkpoints in transformers' `llava-hf` layout, converted on load into our VLM on the shared encoder.

A `LlavaForConditionalGeneration` folder holds a CLIP vision tower, a two-layer GELU projector and a Llama-family
language model. The projector and language model become our Projector and Decoder (same maths, renamed weights);
the vision tower is not loaded when the shared encoder's image tower is the same network (LLaVA-1.5 froze its CLIP
in training, so the checkpoint's copy is OpenAI's ViT-L/14-336 in fp16): the VLM then reads the shared encoder's
patch tokens and the encoder still classifies. The check is a digest of the weights; when they differ the
checkpoint's own tower is loaded for the VLM and a warning says the encoder is no longer shared.

Both weight namings are read: the hub's (`language_model.model.*`, `multi_modal_projector.*`,
`vision_tower.vision_model.*`) and transformers 4.52+'s (`model.language_model.*`, `lm_head.*`, ...).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from triptych import clip
from triptych.core.errors import WeightsError
from triptych.core.tokenizer_files import TOKENIZER_CONFIG
from triptych.core.weights_files import config_value, read_json, read_safetensors, weights_errors

from .config import DecoderConfig
from .model import VLM, VLMConfig

IMAGE_TOKEN = "<image>"
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."  # LLaVA-1.5's COCO caption prompt
# checkpoint prefix -> ours; the longest matching prefix wins (hub naming first, then transformers 4.52+)
RENAMES = (
    ("language_model.model.", "decoder.model."),
    ("language_model.lm_head.", "decoder.lm_head."),
    ("model.language_model.", "decoder.model."),
    ("lm_head.", "decoder.lm_head."),
    ("multi_modal_projector.linear_1.", "projector.fc1."),
    ("multi_modal_projector.linear_2.", "projector.fc2."),
    ("model.multi_modal_projector.linear_1.", "projector.fc1."),
    ("model.multi_modal_projector.linear_2.", "projector.fc2."),
    ("vision_tower.vision_model.", "tower.vision_model."),
    ("model.vision_tower.vision_model.", "tower.vision_model."),
    ("vision_tower.", "tower.vision_model."),
    ("model.vision_tower.", "tower.vision_model."),
)


def _clip_vision_defaults() -> dict:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig().to_dict()


def is_llava_folder(folder: Path) -> bool:
    config = folder / "config.json"
    return config.is_file() and read_json(config).get("model_type") == "llava"


@dataclass
class LlavaCheckpoint:
    """A converted llava-hf folder: our VLM, its tokenizer's special token names, and the vision tower's
    weights in open_clip names (kept aside until we know whether the shared encoder already is that tower)."""

    vlm: VLM
    tower: dict[str, torch.Tensor]  # visual.* (open_clip names), no projection
    vision_config: dict
    folder: Path

    @property
    def tower_digest(self) -> str:
        return weights_digest(self.tower)


def _renamed(key: str) -> str | None:
    best = max((src for src, _ in RENAMES if key.startswith(src)), key=len, default=None)
    if best is None:
        return None
    return dict(RENAMES)[best] + key[len(best) :]


def _special_tokens(folder: Path) -> dict[str, str]:
    """bos/eos/pad token strings from tokenizer_config.json (plain strings or AddedToken dicts); pad falls back
    to unk, then eos (Llama-2 has no pad token)."""
    path = folder / TOKENIZER_CONFIG
    data = read_json(path) if path.is_file() else {}

    def token(role: str) -> str | None:
        value = data.get(f"{role}_token")
        value = value.get("content") if isinstance(value, dict) else value
        return value if isinstance(value, str) and value else None

    bos, eos = token("bos") or "<s>", token("eos") or "</s>"
    return {"bos": bos, "eos": eos, "pad": token("pad") or token("unk") or eos}


def read_config(folder: Path) -> tuple[VLMConfig, dict]:
    """(VLMConfig, the HF vision config) from a llava-hf config.json; what our VLM cannot reproduce is refused
    naming the key."""
    path = folder / "config.json"
    data = read_json(path)
    with weights_errors(path):
        text = config_value(data, "text_config", dict, path)
        vision = config_value(data, "vision_config", dict, path)
        vision = {**_clip_vision_defaults(), **vision}  # hub configs list only what differs from CLIP's defaults
        if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise WeightsError(f"{path}: vision tower {vision.get('model_type')!r} is not a CLIP (clip_vision_model)")
        layer = config_value(data, "vision_feature_layer", int, path, -2)
        strategy = data.get("vision_feature_select_strategy", "default")
        if strategy != "default":
            raise WeightsError(f"{path}: vision_feature_select_strategy {strategy!r}: only 'default' (no class token)")
        if data.get("projector_hidden_act", "gelu") != "gelu":
            raise WeightsError(f"{path}: projector_hidden_act {data['projector_hidden_act']!r}: only 'gelu'")
        if data.get("multimodal_projector_bias", True) is not True:
            raise WeightsError(f"{path}: a projector without biases is not supported")
        cfg = VLMConfig(
            vision_width=vision["hidden_size"],
            vision_layer=layer,
            encoder=str(folder),
            caption_prompt=CAPTION_PROMPT,
            special_tokens=_special_tokens(folder),
            chat_template=True,
            attention="causal",
            image_token=IMAGE_TOKEN,
            prompt_special_tokens=True,
            vision_final_norm=False,
            pad_to_square=True,
            decoder=DecoderConfig.from_hf(text),
        )
    return cfg, vision


def load_llava(folder: str | Path) -> LlavaCheckpoint:
    """Convert a llava-hf folder (config.json + model*.safetensors) into our VLM; the tower's weights are set
    aside (see the module docstring)."""
    folder = Path(folder)
    cfg, vision = read_config(folder)
    state: dict[str, torch.Tensor] = {}
    for key, value in read_safetensors(folder, "model").items():
        ours = _renamed(key)
        if ours is None:
            raise WeightsError(f"{folder}: unexpected weight {key!r} in a LLaVA checkpoint")
        state[ours] = value
    tower_state = {k.removeprefix("tower."): state.pop(k) for k in list(state) if k.startswith("tower.")}
    tower = clip.vision_tower_weights(tower_state, vision, folder)
    return LlavaCheckpoint(VLM(cfg).load_checked(state, folder), tower, vision, folder)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and fp16 values, in name order: equal for the same tower stored in fp32 (the
    CLIP release) and in fp16 (LLaVA's frozen copy of it)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float16).contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def encoder_tower_digest(encoder: clip.Encoder, names: list[str]) -> str | None:
    """The digest of the encoder's image tower over the same weight names, or None when it lacks any (or its
    weights are not in this process: an encoder deployment on Ray Serve)."""
    model = getattr(encoder, "model", None)
    state = model.state_dict() if model is not None else {}
    if not all(name in state for name in names):
        return None
    return weights_digest({name: state[name] for name in names})


def tower_is_the_encoders(checkpoint: LlavaCheckpoint, encoder: clip.Encoder) -> tuple[bool, str]:
    """(same tower?, how it was judged). fp32 and fp16 encoders: the fp16 digests are equal. A bf16 encoder holds
    the CLIP rounded from fp32 to bf16, while the checkpoint's copy went through fp16 first (a rounding apart in a
    few values): each weight must match the checkpoint's within one bf16 step."""
    if encoder.dtype != torch.bfloat16:
        theirs, ours = checkpoint.tower_digest, encoder_tower_digest(encoder, list(checkpoint.tower))
        return ours == theirs, f"digest {theirs[:12]} vs {ours[:12] if ours else 'a different architecture'}"
    model = getattr(encoder, "model", None)
    state = model.state_dict() if model is not None else {}
    for name, weight in checkpoint.tower.items():
        mine = state.get(name)
        if mine is None or mine.shape != weight.shape:
            return False, f"{name} is absent or shaped differently"
        if not torch.allclose(mine.float().cpu(), weight.to(torch.bfloat16).float(), rtol=2**-7, atol=0):
            return False, f"{name} differs beyond bf16 rounding"
    return True, "every weight within bf16 rounding"


def vision_encoder(
    checkpoint: LlavaCheckpoint, encoder: clip.Encoder | None, device, dtype, offload: bool = False
) -> clip.Encoder:
    """The encoder whose patch tokens the VLM reads: the shared one when its image tower is the checkpoint's,
    else (with a warning when one was given) the checkpoint's own tower, loaded for the VLM alone."""
    if encoder is not None:
        same, how = tower_is_the_encoders(checkpoint, encoder)
        if same:
            return encoder
        warnings.warn(
            f"the LLaVA checkpoint's vision tower is not the encoder's image tower ({how}): loading the "
            f"checkpoint's own tower for the VLM, so the encoder is no longer shared (more memory; classification "
            f"keeps {encoder.name!r})",
            stacklevel=3,
        )
    return _own_tower(checkpoint, device, dtype, encoder, offload)


def _image_processor_settings(folder: Path) -> dict:
    """The image processor's settings: preprocessor_config.json (the hub's llava-hf folders) or the
    "image_processor" of processor_config.json (what transformers 5 writes); {} (OpenAI's CLIP mean/std) if none."""
    if (folder / "preprocessor_config.json").is_file():
        return read_json(folder / "preprocessor_config.json")
    if (folder / "processor_config.json").is_file():
        path = folder / "processor_config.json"
        return config_value(read_json(path), "image_processor", dict, path, {})
    return {}


def _own_tower(checkpoint: LlavaCheckpoint, device, dtype, shared: clip.Encoder | None, offload: bool) -> clip.Encoder:
    """The checkpoint's tower as an encoder of its own, on the shared encoder's device and dtype when there is one."""
    return clip.load_vision_tower(
        checkpoint.tower,
        checkpoint.vision_config,
        _image_processor_settings(checkpoint.folder),
        name=f"{checkpoint.folder.name} (own vision tower)",
        where=checkpoint.folder,
        device=shared.device if device is None and shared is not None else device,
        dtype=shared.dtype if dtype is None and shared is not None else dtype,
        offload=shared.placement.offload if shared is not None else offload,
    )
