"""A compact Llama-style decoder whose parameter names load Llama-family safetensors checkpoints directly.

Names follow transformers' LlamaForCausalLM: model.embed_tokens, model.layers.N.self_attn.{q,k,v,o}_proj,
model.layers.N.mlp.{gate,up,down}_proj, model.layers.N.{input,post_attention}_layernorm, model.norm, lm_head
(and self_attn.{q,k}_norm for QK-norm models, as Qwen3 names them). Llama, Mistral, Qwen2, Qwen3 and SmolLM3
folders load (each checked against transformers' own class in tests/test_vlm_decoder.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from triptych.core.errors import WeightsError
from triptych.core.weights_files import read_safetensors

from .config import DecoderConfig
from .kv_cache import KVCache


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Root-mean-square norm computed in fp32 and cast back (as Llama does)."""
    return weight * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos/sin of shape (B, T, head_dim) for (B, T) positions."""
    freqs = positions[..., None].float() * inv_freq  # (B, T, head_dim / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def input_major(*linears: nn.Linear) -> torch.Tensor:
    """The linears' weights stacked along the output and stored (in, out), contiguous: one matmul for all of
    them, and on CPU a single-token matmul reads this layout ~1.5x faster than nn.Linear's (out, in)."""
    return torch.cat([lin.weight for lin in linears]).detach().t().contiguous()


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 and cast back (as Llama does)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Rotary(nn.Module):
    """RoPE tables: cos/sin of shape (B, T, head_dim) for given positions."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return rope_tables(positions, self.inv_freq, dtype)


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked attention of one new token per row, q (B, heads, 1, hd) over k, v (B, kv_heads, S, hd): two small
    matmuls, several times cheaper on CPU than the general kernel for a single query. Query heads are grouped
    onto their key-value head as enable_gqa does (head i reads kv head i // (heads / kv_heads))."""
    b, h, _, hd = q.shape
    kvh = k.shape[1]
    q = q.reshape(b, kvh, h // kvh, hd)  # (B, kv_heads, group, hd)
    weights = torch.softmax((q @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)  # (B, kv_heads, group, S)
    return (weights @ v).reshape(b, h, 1, hd)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def fused_linear(owner: nn.Module, parts: tuple[nn.Linear, ...], x: torch.Tensor) -> torch.Tensor:
    """x through the parts at once, with their input_major weights cached on `owner` until any of them changes.
    Inference only; names and checkpoints stay Llama's."""
    key = tuple((p.weight.data_ptr(), p.weight.dtype, p.weight.device, _version(p.weight)) for p in parts)
    cached = getattr(owner, "_fused", None)
    if cached is None or cached[0] != key:
        weight = input_major(*parts)  # (in, out)
        bias = torch.cat([p.bias for p in parts]).detach() if parts[0].bias is not None else None
        cached = (key, weight, bias)
        owner._fused = cached
    out = x @ cached[1]
    return out if cached[2] is None else out + cached[2]


def use_module_weights(x: torch.Tensor) -> bool:
    """Training (gradients go to each nn.Linear) and accelerators use the Llama layout's own modules; CPU
    inference uses the input-major cached copies of fused_linear (extra memory: one copy of those weights)."""
    return torch.is_grad_enabled() or x.device.type != "cpu"


def _version(t: torch.Tensor) -> int:
    """In-place updates bump a tensor's version; inference tensors have none (and cannot change outside it)."""
    return -1 if t.is_inference() else t._version


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, T, head_dim); cos/sin: (B, T, head_dim)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class Attention(nn.Module):
    """Grouped-query attention with RoPE, optional QK-norm, and an optional preallocated KV cache."""

    def __init__(self, cfg: DecoderConfig, rope: bool = True) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.rope = rope  # False: no positional rotation in this layer (SmolLM3's NoPE layers)
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=cfg.attention_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        start: int,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        h, kvh = self.heads, self.kv_heads
        if use_module_weights(x):
            qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)
        else:  # inference: one matmul
            qkv = fused_linear(self, (self.q_proj, self.k_proj, self.v_proj), x)
        qkv = qkv.view(b, t, h + 2 * kvh, self.head_dim).transpose(1, 2)  # (B, heads + 2 kv_heads, T, hd)
        qk, v = qkv[:, : h + kvh], qkv[:, h + kvh :]
        if hasattr(self, "q_norm"):
            qk = torch.cat([self.q_norm(qk[:, :h]), self.k_norm(qk[:, h:])], dim=1)
        if self.rope:
            qk = apply_rope(qk, cos, sin)  # queries and keys rotated together
        q, k = qk[:, :h], qk[:, h:]
        if cache is not None:
            k, v = cache.update(layer, k, v, start)  # (B, kv_heads, start + T, hd)
        if t == 1 and mask is None and not torch.is_grad_enabled():
            out = single_query_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.heads != self.kv_heads)
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(out) if use_module_weights(out) else fused_linear(self.o_proj, (self.o_proj,), out)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_module_weights(x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = fused_linear(self, (self.gate_proj, self.up_proj), x).chunk(2, dim=-1)
        return fused_linear(self.down_proj, (self.down_proj,), F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer: int) -> None:
        super().__init__()
        self.self_attn, self.mlp = Attention(cfg, rope=cfg.uses_rope(layer)), MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, layer, start):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """Embeddings, blocks and the final norm (`model.*` in Llama checkpoints)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)


class Decoder(nn.Module):
    """Llama-family causal LM. forward takes token ids or embeddings (the VLM passes image tokens as embeddings)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Llama's initialisation: normal(0, 0.02) weights, zero biases (norms stay at one)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        last_only: bool = False,
        causal: bool = True,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) (or (B, 1, vocab) with last_only).

        positions: (B, T) RoPE positions (default start..start+T-1); mask: bool (B, 1, T, S) True = may attend,
        S = start + T with a cache (default: causal, or none at all with causal=False); cache/start: write keys and
        values at [start, start + T).
        """
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        b, t, _ = x.shape
        if positions is None:
            positions = torch.arange(start, start + t, device=x.device).expand(b, t)
        if mask is None and causal and t > 1:  # one new token may see everything before it: no mask needed
            mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)[None, None]
        cos, sin = self.model.rotary(positions, x.dtype)
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin, mask, cache, i, start)
        x = self.model.norm(x[:, -1:] if last_only else x)
        return self.lm_head(x) if use_module_weights(x) else fused_linear(self.lm_head, (self.lm_head,), x)

    def new_cache(self, batch: int, max_len: int, device=None, dtype=None) -> KVCache:
        """A preallocated cache for `batch` sequences of up to `max_len` tokens."""
        p = self.lm_head.weight
        cfg = self.config
        return KVCache(
            cfg.num_hidden_layers,
            batch,
            cfg.num_key_value_heads,
            max_len,
            cfg.head_dim,
            device or p.device,
            dtype or p.dtype,
        )

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Decoder:
        """Load a Llama-family folder: config.json + model.safetensors (or sharded model-*.safetensors)."""
        folder = Path(folder)
        cfg = DecoderConfig.load(folder)
        state = read_safetensors(folder, "model")
        model = cls(cfg)
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise WeightsError(
                f"{folder}: weights do not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return model

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        folder = Path(folder)
        self.config.save(folder)
        state = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight")
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
