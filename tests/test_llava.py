"""The LLaVA recipe on a real-format decoder: a transformers LlamaForCausalLM folder with a byte-level BPE
tokenizer.json (SmolLM2's special tokens), joined to an open_clip encoder, trained stage by stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip, vlm
from triptych.core.errors import WeightsError
from triptych.vlm.train import train
from triptych.world import caption, export_folder, sample_scene

RECIPE = json.loads((Path(__file__).resolve().parents[1] / "weights/recipes/llava_smollm2.json").read_text())
SPECIALS = list(RECIPE["special_tokens"].values())
# SmolLM2-Instruct's chat template, as its tokenizer_config.json carries it
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_llama_folder(folder: Path) -> Path:
    """A SmolLM2-shaped folder: config.json + model.safetensors (transformers) + a byte-level BPE tokenizer.json."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [caption(sample_scene(i)) for i in range(300)] + ["Describe the image."]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": SMOLLM2_TEMPLATE}))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    recipe = {
        **RECIPE,
        "encoder": str(make_tiny_encoder_dir(root / "enc")),
        "decoder_path": str(make_llama_folder(root / "SmolLM2-tiny")),
        "batch_size": 4,
        "save_every": 1,
        "vlm": {**RECIPE["vlm"], "vision_layer": -1},  # the tiny tower has one block; the recipe reads the 2nd-last
    }
    recipe["stages"] = [{**stage, "steps": 2, "warmup_steps": 1} for stage in RECIPE["stages"]]
    return root, recipe, export_folder(root / "captions", 8, seed=3)


def test_stage_one_trains_only_the_projector_then_stage_two_the_decoder(setup):
    root, recipe, data = setup
    original = load_file(Path(recipe["decoder_path"]) / "model.safetensors")
    train(recipe, root / "out", root / "work", workers=0, data=str(data), stop_after=2)
    stage_one = load_file(root / "work/checkpoint/model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(stage_one[f"decoder.{key}"], original[key])  # the Llama weights untouched by stage 1
    info = train(recipe, root / "out", root / "work", workers=0, data=str(data))
    assert info["data"] == str(data)
    final = load_file(root / "out/model.safetensors")
    assert not torch.equal(final[key].float(), original[key])  # stage 2 trained the decoder too


def test_the_trained_folder_loads_with_its_own_tokenizer_and_captions(setup):
    root, recipe, data = setup
    if not (root / "out/model.safetensors").is_file():
        train(recipe, root / "out", root / "work", workers=0, data=str(data))
    config = json.loads((root / "out/config.json").read_text())
    assert config["vlm"]["special_tokens"] == RECIPE["special_tokens"]
    assert config["vlm"]["caption_prompt"] == "Describe the image."
    captioner = vlm.load(str(root / "out"), encoder=clip.load(recipe["encoder"], device="cpu"))
    assert captioner.codec.eos_id == captioner.codec.tokenizer.token_to_id("<|im_end|>")
    out = captioner.caption(sorted(data.glob("*.png"))[:2], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(text, str) for text in out)


def test_an_instruct_decoder_is_prompted_through_its_chat_template(setup):
    root, recipe, data = setup
    if not (root / "out/model.safetensors").is_file():
        train(recipe, root / "out", root / "work", workers=0, data=str(data))
    captioner = vlm.load(str(root / "out"), encoder=clip.load(recipe["encoder"], device="cpu"))
    assert captioner.vlm.config.chat_template
    reference = AutoTokenizer.from_pretrained(recipe["decoder_path"])  # the decoder's own folder, as published
    messages = [{"role": "user", "content": "Describe the image."}]
    expected = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    (ours,) = captioner._prompt_ids(["Describe the image."], max_new_tokens=4)
    assert ours == list(expected["input_ids"])
    assert reference.decode(ours).endswith("<|im_start|>assistant\n")
    # the exported folder carries the template and the decoder's special tokens for AutoTokenizer
    exported = AutoTokenizer.from_pretrained(root / "out")
    assert exported.chat_template == SMOLLM2_TEMPLATE and exported.eos_token == "<|im_end|>"


def test_a_chat_recipe_on_a_decoder_without_a_template_is_refused(setup, tmp_path):
    root, recipe, data = setup
    bare = Path(shutil.copytree(recipe["decoder_path"], tmp_path / "bare"))
    (bare / "tokenizer_config.json").unlink()
    with pytest.raises(WeightsError, match="chat template"):
        train({**recipe, "decoder_path": str(bare)}, tmp_path / "out", tmp_path / "work", workers=0, data=str(data))
