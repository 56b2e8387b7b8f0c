"""Our Llama-style decoder reproduces transformers' LlamaForCausalLM: the proof that real checkpoints load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from triptych.core.errors import WeightsError
from triptych.vlm.config import DecoderConfig
from triptych.vlm.decoder import Decoder

TINY = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
)


def reference(tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(**TINY, tie_word_embeddings=tie, rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms, so a missed weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_llama_for_causal_lm(tmp_path, tie):
    ref = reference(tie)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ours = Decoder.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, TINY["vocab_size"], (3, 17))
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours(ids)
    assert (got - expected).abs().max() < 1e-4


FAMILY_EXTRAS = {  # what sets each family apart, switched on so the parity test exercises it
    "llama": dict(attention_bias=True),
    "mistral": dict(sliding_window=64),
    "qwen2": dict(),  # biases on q/k/v, none on o
    "qwen3": dict(head_dim=24),  # QK-norm, head_dim apart from hidden / heads
    "smollm3": dict(no_rope_layer_interval=2, tie_word_embeddings=True),  # every second layer without RoPE
}


@pytest.mark.parametrize("model_type", sorted(FAMILY_EXTRAS))
def test_every_family_named_in_the_readme_matches_transformers(tmp_path, model_type):
    """Each supported model_type, a tiny random folder written by transformers' own class: the same logits (fp32,
    < 1e-4), and the config we write back names the family's class again."""
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, **{**TINY, "num_hidden_layers": 4}, **FAMILY_EXTRAS[model_type])
    cfg.pad_token_id = cfg.bos_token_id = cfg.eos_token_id = None  # SmolLM3's defaults lie outside a tiny vocabulary
    ref = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # non-zero biases and non-trivial norms, so a missed weight would show
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
    ref.save_pretrained(tmp_path / "ref", safe_serialization=True)
    ours = Decoder.from_pretrained(tmp_path / "ref").eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 40))
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours(ids)
    assert (got - expected).abs().max() < 1e-4
    ours.save_pretrained(tmp_path / "ours")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(again) is type(ref)
    with torch.no_grad():
        assert (again(ids).logits - expected).abs().max() < 1e-4


def test_cached_decoding_matches_a_full_forward(tmp_path):
    reference().save_pretrained(tmp_path, safe_serialization=True)
    model = Decoder.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, 16)
        steps = [model(ids[:, :8], cache=cache, start=0)]
        for t in range(8, 12):
            mask = torch.ones(1, 1, 1, t + 1, dtype=torch.bool)
            steps.append(model(ids[:, t : t + 1], cache=cache, start=t, mask=mask))
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


def test_round_trip_and_bad_folders(tmp_path):
    cfg = DecoderConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=1,
        qk_norm=True,
    )
    model = Decoder(cfg)
    model.save_pretrained(tmp_path / "m")
    again = Decoder.from_pretrained(tmp_path / "m")
    assert again.config == cfg
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(WeightsError, match="config.json"):
        Decoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    cfg.save(tmp_path / "empty")
    with pytest.raises(WeightsError, match="safetensors"):
        Decoder.from_pretrained(tmp_path / "empty")
    with pytest.raises(WeightsError, match="not supported"):
        DecoderConfig.from_hf({"model_type": "gpt2"})


def test_fused_inference_projections_follow_weight_changes(tmp_path):
    """Inference stacks q/k/v (and gate/up) into one matmul; the stack must be rebuilt when a weight changes."""
    reference().save_pretrained(tmp_path, safe_serialization=True)
    model = Decoder.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        before = model(ids)
        assert torch.allclose(before, model(ids))
        layer = model.model.layers[0]
        layer.self_attn.k_proj.weight.mul_(1.5)
        layer.mlp.up_proj.weight.add_(0.01)
        after = model(ids)
    with torch.enable_grad():  # the unfused training path, same weights
        unfused = model(ids).detach()
    assert not torch.allclose(before, after)
    assert torch.allclose(after, unfused, atol=1e-5)
