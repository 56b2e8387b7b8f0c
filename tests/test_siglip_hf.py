"""A transformers SiglipModel folder read by clip.load (converted to open_clip's SigLIP): embeddings and the
per-label sigmoid scores equal transformers' own forward on a tiny random model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from triptych import clip
from triptych.core.errors import WeightsError

WORDS = ["a", "red", "blue", "green", "circle", "square", "star", "photo", "of"]
LABELS = ["a red circle", "a blue square", "a green star"]


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    folder = tmp_path_factory.mktemp("siglip-tiny")
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    common = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=8, **common),
        vision_config=dict(image_size=32, patch_size=8, **common),
    )
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    with torch.no_grad():  # non-trivial norms, biases and scale, so a missed weight would show
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.2)
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-1.5)
    model.save_pretrained(folder)
    return folder, model, tokenizer


def images() -> list[Image.Image]:
    g = torch.Generator().manual_seed(1)
    return [Image.fromarray(torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()) for _ in "ab"]


def test_siglip_folder_scores_as_siglip_model(siglip):
    folder, model, tokenizer = siglip
    encoder = clip.load(str(folder), device="cpu")
    assert encoder.kind == "siglip"
    pictures = images()
    pixels = encoder.pixels(pictures).float()
    ids = tokenizer(LABELS, padding="max_length", max_length=8, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    assert (encoder.encode_image(pictures) - F.normalize(out.image_embeds, dim=-1)).abs().max() < 1e-5
    assert (encoder.encode_text(LABELS) - F.normalize(out.text_embeds, dim=-1)).abs().max() < 1e-5
    probs = encoder.classify(pictures, LABELS, templates="none")  # one template: the label itself
    assert (probs - torch.sigmoid(out.logits_per_image)).abs().max() < 1e-5
    assert not torch.allclose(probs.sum(dim=1), torch.ones(2))  # independent sigmoids, not a softmax


def test_siglip_pixels_are_the_siglip_processors(siglip):
    """Non-square images are resized to the square (squashed), as SiglipImageProcessor does, not cropped."""
    from transformers import SiglipImageProcessor

    folder, _, _ = siglip
    encoder = clip.load(str(folder), device="cpu")
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    g = torch.Generator().manual_seed(2)
    wide = Image.fromarray(torch.randint(0, 256, (20, 48, 3), generator=g, dtype=torch.uint8).numpy())
    theirs = processor(wide, return_tensors="pt")["pixel_values"]
    assert (encoder.pixels(wide) - theirs).abs().max() < 0.02  # both PIL bicubic; rounding of the 8-bit resize


def test_a_siglip_folder_without_tokenizer_json_names_it(siglip, tmp_path):
    folder, model, _ = siglip
    model.save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="tokenizer.json is missing"):
        clip.load(str(tmp_path), device="cpu")
