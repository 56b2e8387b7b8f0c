"""The VLM as a transformers user meets it: AutoTokenizer and GenerationConfig read the bundled folder with our ids,
the language model exports as a LlamaForCausalLM folder with our logits, save_pretrained round-trips, and a
transformers vision-language folder other than LLaVA (tests/test_llava_hf.py) is refused by name instead of guessed
at."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

from triptych import vlm
from triptych.core.errors import WeightsError
from triptych.core.manifest import verify_manifest
from triptych.weights import SHAPES_DIR
from triptych.world import caption, render, sample_scene

FOLDER = SHAPES_DIR / "vlm"


@pytest.fixture(scope="module")
def captioner(encoder):
    return vlm.load("shapes", encoder=encoder)


def test_autotokenizer_reads_the_bundled_folder_with_our_ids(captioner):
    verify_manifest(FOLDER)
    files = json.loads((FOLDER / "manifest.json").read_text())["files"]
    assert {"tokenizer_config.json", "generation_config.json"} <= set(files)
    tok, codec = AutoTokenizer.from_pretrained(FOLDER), captioner.codec
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (codec.bos_id, codec.eos_id, codec.pad_id)
    texts = [caption(sample_scene(seed)) for seed in range(20)]
    texts += ["how many objects are there?", "what is in the top left?", "caption"]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == codec.encode(text)
        assert tok.decode(ids, skip_special_tokens=True) == codec.decode(ids) == text
    generation = GenerationConfig.from_pretrained(FOLDER)
    assert generation.eos_token_id == codec.eos_id and generation.do_sample is False
    assert generation.max_new_tokens == 64


def test_the_decoder_exports_as_llama_for_causal_lm(captioner, tmp_path):
    out = captioner.save_decoder(tmp_path / "decoder")
    verify_manifest(out)
    reference = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, captioner.codec.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(ids).logits  # (3, 20, vocab)
        ours = captioner.vlm.decoder.float()(ids)
    assert (ours - expected).abs().max() < 1e-4
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token_id == captioner.codec.eos_id


def test_save_pretrained_round_trips(captioner, encoder, tmp_path):
    out = captioner.save_pretrained(tmp_path / "vlm", encoder="shapes")
    verify_manifest(out)
    again = vlm.load(str(out), encoder=encoder)
    images = [render(sample_scene(seed)) for seed in (4, 5)]
    assert again.caption(images) == captioner.caption(images)
    assert again.ask(images, "how many objects are there?") == captioner.ask(images, "how many objects are there?")


@pytest.mark.parametrize(
    ("model_type", "architecture"),
    [("paligemma", "PaliGemmaForConditionalGeneration"), ("llava_next", "LlavaNextForConditionalGeneration")],
)
def test_a_transformers_vision_language_folder_other_than_llava_is_refused_by_name(tmp_path, model_type, architecture):
    folder = tmp_path / model_type
    folder.mkdir()
    config = {"architectures": [architecture], "model_type": model_type, "vision_config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=f"{architecture}.*converts only LLaVA"):
        vlm.load(str(folder))


def test_a_malformed_llava_folder_names_the_missing_key(tmp_path):
    folder = tmp_path / "llava-1.5-7b-hf"
    folder.mkdir()
    config = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "vision_config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="config.json: key 'text_config' is missing"):
        vlm.load(str(folder))
