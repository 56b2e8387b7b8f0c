"""One decode step with static shapes, compiled by torch.compile (Inductor): the cache is written at a tensor
slot and attention reads the whole preallocated cache under a validity mask, so every step of a generation has
the same shapes and the graph is compiled once per (batch, cache length bucket). Norms, RoPE, SwiGLU and
softmax fuse into a few kernels; q/k/v and gate/up are one input-major matmul each (as the eager CPU path).

The step is a pure function of explicit tensors (weights included), so its guards are few; and once a shape
has been compiled, later calls with that shape skip guard evaluation (torch.compiler.set_stance's
skip_guard_eval_unsafe, which is safe here because nothing but the shapes can change between calls and every
new shape goes through the guarded path first). On a small decoder the guards otherwise cost about as much as
the step itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .decoder import Decoder, apply_rope, input_major, rms_norm, rope_tables

LENGTH_BUCKET = 64  # cache lengths are rounded up to this, so prompts of similar length share one compiled graph


def bucketed(length: int) -> int:
    return -(-length // LENGTH_BUCKET) * LENGTH_BUCKET


def _step(
    tokens: torch.Tensor,  # (B,)
    positions: torch.Tensor,  # (B,) RoPE positions
    slot: torch.Tensor,  # () cache index written
    valid: torch.Tensor,  # (B, S) cache entries each row may attend to, its own slot included
    k_cache: torch.Tensor,  # (layers, B, kv_heads, S, hd), written in place
    v_cache: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    shape: tuple[int, int, int, float],  # heads, kv_heads, head_dim, eps
) -> torch.Tensor:
    heads, kv_heads, hd, eps = shape
    embed, inv_freq, final_norm, head, *layers = weights
    x = embed[tokens][:, None]  # (B, 1, H)
    b = x.shape[0]
    cos, sin = rope_tables(positions[:, None], inv_freq, x.dtype)  # (B, 1, hd)
    mask = valid[:, None, None, :]  # (B, 1, 1, S)
    for i in range(len(layers) // 6):
        norm1, qkv_w, o_w, norm2, gate_up_w, down_w = layers[6 * i : 6 * i + 6]
        qkv = (rms_norm(x, norm1, eps) @ qkv_w).view(b, 1, heads + 2 * kv_heads, hd).transpose(1, 2)
        qk = apply_rope(qkv[:, : heads + kv_heads], cos, sin)
        q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :]  # (B, heads | kv_heads, 1, hd)
        k_cache[i].index_copy_(2, slot.view(1), k)
        v_cache[i].index_copy_(2, slot.view(1), v)
        out = F.scaled_dot_product_attention(q, k_cache[i], v_cache[i], attn_mask=mask, enable_gqa=heads != kv_heads)
        x = x + out.transpose(1, 2).reshape(b, 1, heads * hd) @ o_w
        gate, up = (rms_norm(x, norm2, eps) @ gate_up_w).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ down_w
    return (rms_norm(x, final_norm, eps) @ head)[:, -1]  # (B, vocab)


class CompiledStep:
    """`step(tokens, positions, slot, valid, k, v)` -> (B, vocab) logits of the next token, one new token per
    row. Holds input-major copies of the decoder's weights taken at construction (inference only: build it
    after loading, not during training). Decoders with QK-norm, biases or layers without RoPE decode eagerly."""

    def __init__(self, decoder: Decoder) -> None:
        cfg = decoder.config
        if cfg.qk_norm or cfg.attention_bias or cfg.qkv_bias or cfg.mlp_bias or cfg.no_rope_layers is not None:
            raise ValueError("the compiled step covers plain Llama layers (no QK-norm, no biases, RoPE everywhere)")
        body = decoder.model
        weights = [body.embed_tokens.weight.detach(), body.rotary.inv_freq, body.norm.weight.detach()]
        weights.append(input_major(decoder.lm_head))
        for block in body.layers:
            a, m = block.self_attn, block.mlp
            weights += [
                block.input_layernorm.weight.detach(),
                input_major(a.q_proj, a.k_proj, a.v_proj),
                input_major(a.o_proj),
                block.post_attention_layernorm.weight.detach(),
                input_major(m.gate_proj, m.up_proj),
                input_major(m.down_proj),
            ]
        self.weights = tuple(weights)
        self.shape = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps)
        self._compiled = torch.compile(_step, fullgraph=True, dynamic=False)
        self._warm: set[tuple] = set()  # input signatures already compiled

    def __call__(self, tokens, positions, slot, valid, k_cache, v_cache) -> torch.Tensor:
        args = (tokens, positions, slot, valid, k_cache, v_cache, self.weights, self.shape)
        key = (
            *(tuple(t.shape) for t in (tokens, valid, k_cache)),
            k_cache.dtype,
            k_cache.device,
            torch.is_inference_mode_enabled(),
            torch.is_grad_enabled(),
        )
        if key in self._warm:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self._compiled(*args)
        out = self._compiled(*args)  # compiles (or checks every guard) for a signature not seen yet
        self._warm.add(key)
        return out
