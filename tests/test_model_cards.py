"""Every folder we write carries a model card the Hub reads: huggingface_hub parses its metadata, and a
hand-written card keeps its text when the metadata is rewritten."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from tests.tiny_models import tiny_recipe
from triptych import diffusion, vlm
from triptych.clip.train import train as train_clip
from triptych.core.model_card import hub_models, write_card
from triptych.weights import SHAPES_DIR

EXPECTED = {
    "clip": ("open_clip", "zero-shot-image-classification"),
    "vlm": ("triptych", "image-text-to-text"),
    "diffusion": ("diffusers", "text-to-image"),  # pooled: diffusers opens it
    "diffusion-grid": ("triptych", "text-to-image"),  # spatial (the bundle): only triptych does
    "decoder": ("transformers", "text-generation"),
}


def check_card(folder, part: str) -> ModelCard:
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag) == EXPECTED[part]
    assert data.license == "apache-2.0" and "triptych" in data.tags
    assert ("kandinsky" in data.tags) == (part == "diffusion")  # only a pooled generator is a Kandinsky 2.2 folder
    return card


@pytest.mark.parametrize(("folder", "part"), [("clip", "clip"), ("vlm", "vlm"), ("diffusion", "diffusion-grid")])
def test_bundled_cards_carry_metadata_and_their_text(folder, part):
    card = check_card(SHAPES_DIR / folder, part)
    assert card.data.datasets == ["shapes-world"]
    assert card.text.lstrip().startswith("# shapes") and "model card" in card.text


def test_a_trained_encoder_gets_a_card_and_retraining_keeps_its_text(tmp_path):
    out = tmp_path / "out"
    train_clip(tiny_recipe(steps=2), out, tmp_path / "work", workers=0)
    card = check_card(out, "clip")
    assert card.text.lstrip().startswith("# out") and 'clip.load("out")' in card.text
    (out / "README.md").write_text("---\nlicense: mit\n---\n# my encoder\n\nnotes I wrote\n")
    train_clip(tiny_recipe(steps=2), out, tmp_path / "work", workers=0, resume=False)
    card = check_card(out, "clip")  # metadata rewritten ...
    assert "notes I wrote" in card.text  # ... over the text the user wrote


def test_saved_vlm_decoder_and_generator_folders_get_cards(encoder, tmp_path):
    captioner = vlm.load("shapes", encoder=encoder)
    check_card(captioner.save_pretrained(tmp_path / "vlm"), "vlm")
    card = check_card(captioner.save_decoder(tmp_path / "lm"), "decoder")
    assert "AutoModelForCausalLM" in card.text
    check_card(diffusion.load("shapes", encoder=encoder).save_pretrained(tmp_path / "gen"), "diffusion-grid")


def test_base_models_are_the_hub_repositories_behind_presets(tmp_path):
    assert hub_models(["llava-smollm2-135m", str(tmp_path), None]) == [
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ]
    write_card(tmp_path, "vlm", name="mine", summary="s", base_model=hub_models(["llava-smollm2-135m"]))
    assert ModelCard.load(tmp_path / "README.md").data.base_model[1] == "HuggingFaceTB/SmolLM2-135M-Instruct"
