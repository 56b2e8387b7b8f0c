"""The decoder's configuration, read from and written as a Llama-family `config.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from triptych.core.errors import WeightsError
from triptych.core.weights_files import check_fields, read_json, weights_errors

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
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


@dataclass
class DecoderConfig:
    """A Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention, optional QK-norm (Qwen3-style)."""

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

    @classmethod
    def from_hf(cls, data: dict) -> DecoderConfig:
        """From a Hugging Face config dict (Llama, Mistral, Qwen2/3 layouts; plain RoPE only)."""
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
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["rope_theta"] = rope.get("rope_theta", data.get("rope_theta", 10000.0))
        kwargs["qk_norm"] = data.get("qk_norm", model_type == "qwen3")
        kwargs.setdefault("num_key_value_heads", data.get("num_attention_heads"))
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """A LlamaForCausalLM config.json (with `qk_norm` recorded for our own loader)."""
        data = asdict(self)
        data.update(
            model_type="llama",
            architectures=["LlamaForCausalLM"],
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
