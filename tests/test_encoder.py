"""The shared encoder: loading, encoding, zero-shot classification, caching, patch tokens, text states, errors."""

from __future__ import annotations

import shutil

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip
from triptych.core.errors import InvalidImageError, InvalidLabelsError, InvalidTextError, WeightsError
from triptych.weights import SHAPES_DIR
from triptych.world import render, sample_scene


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_encoder_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return clip.load(f"local-dir:{tiny_dir}", device="cpu")


def images(n: int, seed: int = 0) -> list[Image.Image]:
    return [render(sample_scene(seed + i)) for i in range(n)]


def test_bundled_encoder_equals_plain_open_clip(encoder):
    """Plain open_clip loads the bundled folder and gives identical embeddings."""
    name = f"local-dir:{SHAPES_DIR / 'clip'}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    ims = images(8)
    texts = ["a red circle", "two objects on a black background", "a picture of a large blue star in the center"]
    with torch.no_grad():
        plain_img = model.eval().encode_image(torch.stack([preprocess(im) for im in ims]), normalize=True)
        plain_txt = model.encode_text(tokenizer(texts), normalize=True)
    assert (encoder.encode_image(ims) - plain_img).abs().max() < 1e-5
    assert (encoder.encode_text(texts) - plain_txt).abs().max() < 1e-5


def test_embeddings_are_normalised_and_shaped(tiny):
    emb = tiny.encode_image(images(3))
    assert emb.shape == (3, tiny.embed_dim) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    txt = tiny.encode_text(["a red circle", "a blue star"])
    assert txt.shape == (2, tiny.embed_dim)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_inputs_in_any_form_give_the_same_embedding(tiny, tmp_path):
    image = images(1)[0]
    path = tmp_path / "scene.png"
    image.save(path)
    rgba = image.convert("RGBA")
    ref = tiny.encode_image(image)
    for variant in (path, np.asarray(image), rgba, path.read_bytes()):
        assert (tiny.encode_image(variant) - ref).abs().max() < 1e-6
    with pytest.raises(InvalidImageError, match="pathlib.Path"):  # a str is text, never a file path
        tiny.encode_image(str(path))
    resized = tiny.encode_image(image.resize((128, 128), Image.NEAREST))  # other sizes go through the transform
    assert resized.shape == ref.shape


def test_classify_softmax_rows_sum_to_one(tiny):
    probs = tiny.classify(images(4), ["a red circle", "a blue star", "a green square"])
    assert probs.shape == (4, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-5)


def test_label_sets_are_cached(tiny, monkeypatch):
    labels, templates = ["a red circle", "a blue star"], ("{}", "a picture of {}")
    first = tiny.label_embeddings(labels, templates)
    calls, real = [], tiny.encode_text
    monkeypatch.setattr(tiny, "encode_text", lambda texts, **kw: calls.append(texts) or real(texts, **kw))
    assert tiny.label_embeddings(labels, templates) is first and calls == []
    tiny.classify(images(2), labels, templates)
    assert calls == []
    tiny.label_embeddings(["a new label", "another"], templates)  # a new set reaches the text tower once
    assert calls == [["a new label", "a picture of a new label", "another", "a picture of another"]]


def plain_open_clip(folder) -> tuple:
    """open_clip's own model, eval transform and tokenizer for a local-dir folder."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def test_template_ensemble_equals_open_clips_zero_shot_classifier(tiny, tiny_dir):
    labels = ["a red circle", "a blue star", "two crosses"]
    templates = ("{}", "there is {}", "a picture of {} on a black background")
    model, _, tokenizer = plain_open_clip(tiny_dir)
    with torch.no_grad():
        theirs = open_clip.build_zero_shot_classifier(model, tokenizer, labels, templates, num_classes_per_batch=2)
    assert theirs.shape == (tiny.embed_dim, 3)
    assert (tiny.label_embeddings(labels, templates) - theirs.T).abs().max() < 1e-5


@pytest.mark.parametrize(
    "labels, message",
    [
        ([], "empty"),
        (["a", "a"], "twice"),
        (["a", "  "], "empty"),
        ("a red circle", "list"),
        (["a", 3], "empty"),
    ],
)
def test_bad_labels(tiny, labels, message):
    with pytest.raises(InvalidLabelsError, match=message):
        tiny.classify(images(1), labels)


@pytest.mark.parametrize("templates", [["no placeholder"], ["{} and {}"], []])
def test_bad_templates(tiny, templates):
    with pytest.raises(InvalidTextError):
        tiny.classify(images(1), ["a", "b"], templates)


@pytest.mark.parametrize("texts", [[""], ["   "], ["x" * 5000], [], [None]])
def test_bad_texts(tiny, texts):
    with pytest.raises(InvalidTextError):
        tiny.encode_text(texts)


def test_odd_unicode_and_long_text_are_handled(tiny):
    emb = tiny.encode_text(["Ａ ＲＥＤ circle 🔴", "a red circle " * 200, "\u200b zero\u00a0width"])
    assert torch.isfinite(emb).all() and emb.shape[0] == 3
    assert torch.allclose(tiny.encode_text(["A RED CIRCLE"]), tiny.encode_text(["a red circle"]), atol=1e-6)


def test_patch_tokens_and_text_states(tiny):
    tokens = tiny.patch_tokens(images(2))
    grid = (63 // 21) ** 2
    assert tokens.shape == (2, grid, tiny.vision_width)
    earlier = tiny.patch_tokens(images(2), layer=0, normalize=False)
    assert earlier.shape == tokens.shape and not torch.allclose(earlier, tokens)
    states = tiny.text_states(["a red circle", "two objects on a black background"])
    assert states.states.shape[:2] == states.mask.shape == (2, 36)
    assert states.mask.sum(1).tolist() == [5, 8]  # <bos> words <eos>
    assert torch.allclose(
        F.normalize(states.embeds, dim=-1),
        tiny.encode_text(["a red circle", "two objects on a black background"]),
        atol=1e-5,
    )
    empty = tiny.text_states(["", "a red circle"], allow_empty=True)
    assert empty.mask.sum(1).tolist() == [2, 5]  # "" is <bos><eos>, the unconditional prompt
    with pytest.raises(InvalidTextError):
        tiny.text_states([""])


def test_unnormalised_image_embeddings_and_the_zero_image(tiny):
    raw = tiny.encode_image(images(2), normalize=False)
    assert torch.allclose(F.normalize(raw, dim=-1), tiny.encode_image(images(2)), atol=1e-5)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
    zero = tiny.zero_image_embed()
    assert zero.shape == (1, tiny.embed_dim) and torch.isfinite(zero).all()


def test_siglip_scores_equal_open_clips_forward_pass(tmp_path):
    folder = make_tiny_encoder_dir(tmp_path, loss="siglip")
    enc = clip.load(str(folder), device="cpu")
    assert enc.kind == "siglip"
    ims, labels = images(3), ["a red circle", "a blue star", "a green cross"]
    model, preprocess, tokenizer = plain_open_clip(folder)
    with torch.no_grad():  # open_clip's SigLIP forward: features, exp(logit_scale), logit_bias
        image_features, text_features, scale, bias = model(torch.stack([preprocess(i) for i in ims]), tokenizer(labels))
    theirs = torch.sigmoid(image_features @ text_features.T * scale + bias)  # SigLIP's per-pair probability
    probs = enc.classify(ims, labels)
    assert (probs - theirs).abs().max() < 1e-5
    assert not torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-2)  # independent per label, not a softmax


def test_clip_scores_equal_open_clips_forward_pass(tiny, tiny_dir):
    ims, labels = images(3), ["a red circle", "a blue star", "a green cross"]
    model, preprocess, tokenizer = plain_open_clip(tiny_dir)
    with torch.no_grad():
        image_features, text_features, scale = model(torch.stack([preprocess(i) for i in ims]), tokenizer(labels))
    theirs = (image_features @ text_features.T * scale).softmax(dim=-1)  # open_clip README's zero-shot recipe
    assert (tiny.classify(ims, labels) - theirs).abs().max() < 1e-5


def test_timm_towers_give_patch_tokens(tmp_path):
    enc = clip.load(str(make_tiny_encoder_dir(tmp_path, timm_tower="vit_tiny_patch16_224")), device="cpu")
    tokens = enc.patch_tokens(images(2))
    assert tokens.shape == (2, (224 // 16) ** 2, 192) and enc.vision_width == 192  # class token removed
    assert enc.encode_image(images(2)).shape == (2, enc.embed_dim)


def test_manifest_catches_corrupt_and_missing_files(tmp_path, tiny_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    weights = bad / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="open_clip_model.safetensors is corrupted"):
        clip.load(str(bad), device="cpu")
    weights.unlink()
    with pytest.raises(WeightsError, match="open_clip_model.safetensors is missing"):
        clip.load(str(bad), device="cpu")


def test_load_refuses_unknown_names_and_pickles(tmp_path):
    with pytest.raises(WeightsError, match="unknown encoder"):
        clip.load("no-such-model", device="cpu")
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsError, match="safetensors"):
        clip.load(f"local-dir:{folder}", device="cpu")
    with pytest.raises(ValueError, match="fp16"):
        clip.load("shapes", device="cpu", dtype="fp16")


def test_bf16_on_cpu(tiny_dir):
    enc = clip.load(str(tiny_dir), device="cpu", dtype="bf16")
    assert enc.dtype == torch.bfloat16
    ref = clip.load(str(tiny_dir), device="cpu")
    cos = (enc.encode_image(images(4)) * ref.encode_image(images(4))).sum(-1)
    assert (cos > 0.98).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checked on the lent GPU)")
def test_fp16_on_cuda_matches_fp32(tiny_dir):
    gpu = clip.load(str(tiny_dir))
    assert gpu.dtype == torch.float16
    cpu = clip.load(str(tiny_dir), device="cpu")
    cos = (gpu.encode_image(images(4)).cpu() * cpu.encode_image(images(4))).sum(-1)
    assert (cos > 0.999).all()


@pytest.mark.parametrize("name", ["hf-hub:someone/no-such-clip", "ViT-B-32:laion2b_s34b_b79k"])
def test_hub_sources_fail_clearly_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="could not load encoder"):
        clip.load(name, device="cpu")


def test_names_resolve_to_open_clip_sources(tmp_path):
    from triptych.clip.factory import open_clip_source
    from triptych.core.resolve import resolve

    assert resolve("shapes").encoder == str(SHAPES_DIR / "clip")
    assert open_clip_source(resolve("shapes").encoder)[0] == f"local-dir:{SHAPES_DIR / 'clip'}"
    assert open_clip_source("ViT-B-32:openai") == ("ViT-B-32", "openai", None)
    assert open_clip_source("ViT-B-32", pretrained="laion2b_s34b_b79k")[:2] == ("ViT-B-32", "laion2b_s34b_b79k")
    assert resolve("hf-hub:timm/ViT-B-16-SigLIP").encoder == "hf-hub:timm/ViT-B-16-SigLIP"
    assert open_clip_source("hf-hub:timm/ViT-B-16-SigLIP") == ("hf-hub:timm/ViT-B-16-SigLIP", None, None)
    assert open_clip_source(str(tmp_path))[2] == tmp_path
