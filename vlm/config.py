"""The decoder's configuration, read from and written as a Llama-family `config.json`."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from triptych.core.errors import WeightsError
from triptych.core.weights_files import check_fields, read_json, weights_errors

# model_type -> the transformers class its folders load as (every one passes the logits parity test)
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "smollm3": "SmolLM3ForCausalLM",
}
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
POSITIVE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
)


FILLED_FROM_FAMILY = (*POSITIVE_FIELDS, "rms_norm_eps", "tie_word_embeddings", "hidden_act", "attention_bias")


@functools.cache
def _transformers_defaults(model_type: str) -> dict:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type).to_dict()


def _family_defaults(model_type: str, data: dict) -> dict:
    """What a config.json leaves out, as transformers fills it for its family: hub configs often list only what
    differs from the defaults (llava-hf/llava-1.5-7b-hf's text_config names four keys). model_type is already one of
    ours, so no code is chosen by the folder."""
    defaults = _transformers_defaults(model_type)
    filled = {key: defaults[key] for key in FILLED_FROM_FAMILY if key not in data and defaults.get(key) is not None}
    if not any(key in data for key in ("rope_parameters", "rope_scaling", "rope_theta")):
        rope = defaults.get("rope_parameters") or {"rope_theta": defaults.get("rope_theta", 10000.0)}
        filled["rope_parameters"] = rope
    return filled


@dataclass
class DecoderConfig:
    """A Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention, optional QK-norm (Qwen3), biases on
    q/k/v alone (Qwen2), layers without RoPE (SmolLM3's `no_rope_layers`)."""

    vocab_size: int = 128
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    qkv_bias: bool | None = None  # None: as attention_bias (Qwen2 biases q/k/v but not o)
    no_rope_layers: list | None = None  # per layer, 1 = RoPE, 0 = none (SmolLM3); None: RoPE everywhere
    model_type: str = "llama"

    def __post_init__(self) -> None:
        """Types and ranges checked here, so a malformed config.json fails at load naming its key."""
        check_fields(self)
        for name in POSITIVE_FIELDS:
            if (value := getattr(self, name)) is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError("rms_norm_eps and rope_theta must be positive")
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.qkv_bias is None:
            self.qkv_bias = self.attention_bias
        rope = self.no_rope_layers
        if rope is not None and (len(rope) != self.num_hidden_layers or any(v not in (0, 1) for v in rope)):
            raise ValueError(f"no_rope_layers must be {self.num_hidden_layers} values of 0 or 1, got {rope!r}")
        if self.model_type not in ARCHITECTURES:
            raise ValueError(f"model_type {self.model_type!r} is not supported; use one of {SUPPORTED_MODEL_TYPES}")

    def uses_rope(self, layer: int) -> bool:
        return self.no_rope_layers is None or bool(self.no_rope_layers[layer])

    @classmethod
    def from_hf(cls, data: dict) -> DecoderConfig:
        """From a Hugging Face config dict (Llama, Mistral, Qwen2/3, SmolLM3 layouts; plain RoPE only). A sliding
        attention window (Mistral v0.1) caps the context at the window, inside which attention is the same."""
        model_type = data.get("model_type", "llama")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise WeightsError(
                f"decoder model_type {model_type!r} is not supported; use one of {SUPPORTED_MODEL_TYPES}"
            )
        if data.get("hidden_act", "silu") != "silu":
            raise WeightsError(f"hidden_act {data['hidden_act']!r} is not supported (SwiGLU with silu only)")
        rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            raise WeightsError(f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not supported")
        data = {**_family_defaults(model_type, data), **data}
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["rope_theta"] = rope.get("rope_theta", data.get("rope_theta", 10000.0))
        kwargs["qk_norm"] = data.get("qk_norm", model_type == "qwen3")
        kwargs.setdefault("num_key_value_heads", data.get("num_attention_heads"))
        kwargs["model_type"] = model_type
        if model_type == "qwen2":
            kwargs.update(qkv_bias=True, attention_bias=False)
        if model_type == "smollm3" and data.get("no_rope_layers") is None:
            interval = data.get("no_rope_layer_interval", 4)
            layers = data.get("num_hidden_layers", cls.num_hidden_layers)
            if isinstance(interval, int) and isinstance(layers, int) and interval > 0:
                kwargs["no_rope_layers"] = [int((i + 1) % interval != 0) for i in range(layers)]
        window = data.get("sliding_window")
        if isinstance(window, int) and window > 0 and data.get("use_sliding_window", model_type == "mistral"):
            kwargs["max_position_embeddings"] = min(window, data.get("max_position_embeddings", window))
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """A config.json of the family it came from (LlamaForCausalLM for our own), `qk_norm` and `qkv_bias`
        recorded for our own loader."""
        data = asdict(self)
        data.update(
            architectures=[ARCHITECTURES[self.model_type]],
            # special token ids live in generation_config.json and the tokenizer files; a family's defaults here
            # (SmolLM3's pad 128004) would lie outside a smaller vocabulary
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
        )
        return data

    @classmethod
    def load(cls, folder: str | Path) -> DecoderConfig:
        path = Path(folder) / "config.json"
        with weights_errors(path):
            return cls.from_hf(read_json(path))

    def save(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text(json.dumps(self.to_hf(), indent=1) + "\n")
