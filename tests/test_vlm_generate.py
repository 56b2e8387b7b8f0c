"""Generation: batched left-padded decoding equals one-by-one, the cache equals no cache, sampling and beams."""

from __future__ import annotations

import pytest
import torch

from triptych.vlm.config import DecoderConfig
from triptych.vlm.decoder import Decoder
from triptych.vlm.generate import GenerationConfig, Generator
from triptych.vlm.masks import prefix_lm_mask

EOS = 1


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    cfg = DecoderConfig(
        vocab_size=40,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    decoder = Decoder(cfg).eval()
    with torch.no_grad():
        decoder.lm_head.weight.mul_(8)  # peaked distributions: long, varied continuations
    return Generator(decoder, EOS, decode=lambda ids: " ".join(f"t{i}" for i in ids))


def left_pad(prefixes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    p = max(x.shape[0] for x in prefixes)
    embeds = torch.zeros(len(prefixes), p, prefixes[0].shape[1])
    valid = torch.zeros(len(prefixes), p, dtype=torch.bool)
    for i, x in enumerate(prefixes):
        embeds[i, p - x.shape[0] :] = x
        valid[i, p - x.shape[0] :] = True
    return embeds, valid


def test_batched_left_padding_equals_one_by_one(gen):
    torch.manual_seed(1)
    prefixes = [torch.randn(n, 48) for n in (3, 9, 5, 12)]
    cfg = GenerationConfig(max_new_tokens=12)
    batched = gen.generate(*left_pad(prefixes), cfg)
    alone = [gen.generate(x[None], torch.ones(1, x.shape[0], dtype=torch.bool), cfg)[0] for x in prefixes]
    assert batched == alone
    assert len(set(alone)) > 1 and all(alone)


def test_cache_matches_recomputing_everything(gen):
    torch.manual_seed(2)
    prefix = torch.randn(1, 6, 48)
    text = gen.generate(prefix, torch.ones(1, 6, dtype=torch.bool), GenerationConfig(max_new_tokens=8))[0]
    ids = [int(t[1:]) for t in text.split()]
    seq = prefix
    decoder = gen.decoder
    for expected in ids:  # no cache: the whole sequence again every step, prefix-LM mask
        valid = torch.ones(1, seq.shape[1], dtype=torch.bool)
        mask = prefix_lm_mask(valid, torch.tensor([6]))
        with torch.no_grad():
            token = decoder(inputs_embeds=seq, mask=mask)[0, -1].argmax().item()
        assert token == expected
        seq = torch.cat([seq, decoder.model.embed_tokens(torch.tensor([[token]]))], 1)


def test_sampling_is_seeded_and_streaming_concatenates(gen):
    prefix, valid = torch.randn(1, 4, 48), torch.ones(1, 4, dtype=torch.bool)
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, top_k=5, top_p=0.9, seed=3)
    assert gen.generate(prefix, valid, cfg) == gen.generate(prefix, valid, cfg)
    pieces = list(gen.stream(prefix, valid, GenerationConfig(max_new_tokens=10)))
    assert "".join(pieces) == gen.generate(prefix, valid, GenerationConfig(max_new_tokens=10))[0]
    assert len(pieces) > 1


def test_beam_search_is_deterministic_and_bounded(gen):
    torch.manual_seed(4)
    prefix, valid = torch.randn(1, 5, 48), torch.ones(1, 5, dtype=torch.bool)
    cfg = GenerationConfig(max_new_tokens=6, num_beams=4)
    beam = gen.generate(prefix, valid, cfg)[0]
    assert beam == gen.generate(prefix, valid, cfg)[0]
    assert 1 <= len(beam.split()) <= 6 and all(t.startswith("t") for t in beam.split())


def test_stop_strings_and_limits(gen):
    prefix, valid = torch.randn(1, 4, 48), torch.ones(1, 4, dtype=torch.bool)
    full = gen.generate(prefix, valid, GenerationConfig(max_new_tokens=10))[0]
    second = full.split()[1]
    cut = gen.generate(prefix, valid, GenerationConfig(max_new_tokens=10, stop_strings=(second,)))[0]
    assert cut == full[: full.find(second)]
    assert len(gen.generate(prefix, valid, GenerationConfig(max_new_tokens=3))[0].split()) <= 3


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_new_tokens=0),
        dict(max_new_tokens=-1),
        dict(max_new_tokens=10**6),
        dict(temperature=float("nan")),
        dict(temperature=-1.0),
        dict(top_p=0.0),
        dict(top_k=-1),
        dict(num_beams=0),
        dict(num_beams=2, temperature=1.0),
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        GenerationConfig(**bad).checked()


def test_no_cache_path_gives_the_same_text(gen):
    torch.manual_seed(5)
    prefixes = [torch.randn(n, 48) for n in (4, 7)]
    embeds, valid = left_pad(prefixes)
    cached = gen.generate(embeds, valid, GenerationConfig(max_new_tokens=10))
    assert gen.generate(embeds, valid, GenerationConfig(max_new_tokens=10, use_cache=False)) == cached
    forced = gen.generate(embeds, valid, GenerationConfig(max_new_tokens=10, ignore_eos=True))
    assert all(len(t.split()) == 10 for t in forced)


def test_compiled_static_step_decodes_as_the_eager_loop(gen):
    """The torch.compile'd step (whole cache under a mask, slot as a tensor) gives the eager loop's tokens, for a
    left-padded batch and alone; one compile serves every step and every prompt in the same length bucket."""
    compiled = Generator(gen.decoder, EOS, gen.decode, compiled=True)
    torch.manual_seed(5)
    prefixes = [torch.randn(n, 48) for n in (4, 10, 7)]
    cfg = GenerationConfig(max_new_tokens=10)
    embeds, valid = left_pad(prefixes)
    assert compiled.generate(embeds, valid, cfg) == gen.generate(embeds, valid, cfg)
    one = prefixes[0][None], torch.ones(1, 4, dtype=torch.bool)
    assert compiled.generate(*one, cfg) == gen.generate(*one, cfg)
    sampled = GenerationConfig(max_new_tokens=10, temperature=0.8, top_k=10, seed=3)
    assert compiled.generate(*one, sampled) == gen.generate(*one, sampled)
    streamed = "".join(compiled.stream(*one, cfg))
    assert streamed == gen.generate(*one, cfg)[0]
