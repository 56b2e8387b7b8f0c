"""Real-weights formats, proven without a hub: tiny random models saved as the hub lays them out, loaded through
our code, checked numerically against transformers and diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline
from transformers import CLIPConfig, CLIPModel

from tests.hf_models import (
    clip_configs,
    make_kandinsky_decoder_repo,
    make_kandinsky_prior_repo,
    write_clip_tokenizer,
)
from triptych import clip, diffusion
from triptych.diffusion.schedulers import make_scheduler
from triptych.world import render, sample_scene

END_OF_TEXT = 519  # the tiny tokenizer's last id
PROMPTS = ["a red circle", "two blue squares on the left"]


@pytest.fixture(scope="module")
def kandinsky(tmp_path_factory):
    """A preset folder with both Kandinsky repositories, and their components loaded by the reference code."""
    root = tmp_path_factory.mktemp("k22")
    prior = make_kandinsky_prior_repo(root / "kandinsky-2-2-prior")
    decoder = make_kandinsky_decoder_repo(root / "kandinsky-2-2-decoder")
    return root, prior, decoder


def reference_prior(parts: dict) -> KandinskyV22PriorPipeline:
    pipe = KandinskyV22PriorPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------- encoder bridge
@pytest.mark.parametrize("pooling", ["legacy", "eos"])  # argmax of the ids (eos_token_id 2), or the EOS id
def test_encoder_equals_transformers_clip(tmp_path, pooling):
    parts = make_kandinsky_prior_repo(tmp_path, eos_token_id=2 if pooling == "legacy" else END_OF_TEXT)
    enc = clip.load(str(tmp_path), device="cpu")
    ids = parts["tokenizer"](PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert torch.equal(enc.tokenize(PROMPTS), ids.input_ids)
    with torch.no_grad():
        theirs = parts["text_encoder"](ids.input_ids)
        pixels = torch.randn(3, 3, 32, 32)
        their_images = parts["image_encoder"](pixels).image_embeds
    states = enc.text_states(PROMPTS)
    assert (states.embeds - theirs.text_embeds).abs().max() < 1e-4
    assert (states.states - theirs.last_hidden_state).abs().max() < 1e-4
    assert torch.equal(states.mask, ids.attention_mask.bool())  # the end token counts though it is also the pad
    ours_images = enc.model.encode_image(pixels)
    assert (ours_images - their_images).abs().max() < 1e-4
    normalised = torch.nn.functional.normalize
    assert (enc.encode_text(PROMPTS) - normalised(theirs.text_embeds, dim=-1)).abs().max() < 1e-4
    scene = render(sample_scene(1))
    hf_pixels = parts["image_processor"](scene, return_tensors="pt").pixel_values
    assert (enc.pixels(scene) - hf_pixels).abs().max() < 0.02  # same resize/crop/normalise recipe
    assert enc.patch_tokens(scene).shape == (1, 16, 32)  # 4x4 patches of the 32-px image for the VLM


def test_clip_model_folder_keeps_its_logit_scale(tmp_path):
    text_cfg, vision_cfg = clip_configs(vocab_size=520, act="quick_gelu")
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), projection_dim=32))
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    model.eval().save_pretrained(tmp_path / "m")
    tokenizer = write_clip_tokenizer(tmp_path / "m")
    enc = clip.load(str(tmp_path / "m"), device="cpu")
    ids = tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
    ours = enc.model.encode_image(pixels, normalize=True) @ enc.encode_text(PROMPTS).T * enc.model.logit_scale.exp()
    assert (ours - out.logits_per_image).abs().max() < 1e-3
    assert enc.model.logit_scale.item() == pytest.approx(3.0)


def test_hf_folder_problems_are_named(tmp_path):
    make_kandinsky_prior_repo(tmp_path)
    (tmp_path / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(clip.WeightsError, match="merges.txt"):
        clip.load(str(tmp_path), device="cpu")
    make_kandinsky_prior_repo(tmp_path)
    for f in (tmp_path / "text_encoder").glob("*.safetensors"):
        f.unlink()
    (tmp_path / "text_encoder" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(clip.WeightsError, match="safetensors"):
        clip.load(str(tmp_path), device="cpu")


# ---------------------------------------------------------------------- Kandinsky 2.2 prior and full path
@pytest.mark.parametrize("guidance", [1.0, 4.0])
@pytest.mark.parametrize("negative", [None, "green"])
def test_prior_stage_equals_kandinsky_prior_pipeline(kandinsky, guidance, negative):
    root, parts, _ = kandinsky
    theirs = reference_prior(parts)(
        PROMPTS,
        negative_prompt=[negative] * 2 if negative else None,
        num_inference_steps=5,
        guidance_scale=guidance,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(11),
    )
    stage = diffusion.load(str(root), device="cpu").prior
    embeds, negative_embeds = stage(
        PROMPTS,
        [negative] * 2 if negative else None,
        steps=5,
        guidance=guidance,
        num_images=2,
        generator=torch.Generator().manual_seed(11),
        progress=False,
    )
    assert embeds.shape == theirs.image_embeds.shape == (4, 32)
    assert (embeds - theirs.image_embeds).abs().max() < 1e-4
    assert (negative_embeds - theirs.negative_image_embeds).abs().max() < 1e-4


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_text_to_image_equals_kandinsky_prior_and_decoder_pipelines(kandinsky, scheduler):
    root, prior_parts, decoder_parts = kandinsky
    gen = diffusion.load(str(root), device="cpu")
    assert gen.encoder.name == str(root / "kandinsky-2-2-prior")
    settings = dict(steps=4, guidance=4.0, prior_steps=5, prior_guidance=4.0, scheduler=scheduler)
    ours = gen.generate(PROMPTS[:1], seed=5, num_images=2, progress=False, output_type="pt", **settings)

    generator = torch.Generator().manual_seed(5)
    embeds = reference_prior(prior_parts)(
        PROMPTS[:1], num_inference_steps=5, guidance_scale=4.0, num_images_per_prompt=2, generator=generator
    )
    sched = make_scheduler(scheduler, dict(decoder_parts["scheduler"].config))
    pipe = KandinskyV22Pipeline(unet=decoder_parts["unet"], scheduler=sched, movq=decoder_parts["movq"])
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        image_embeds=embeds.image_embeds,
        negative_image_embeds=embeds.negative_image_embeds,
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=4.0,
        generator=generator,
        output_type="np",
    ).images  # (N, H, W, 3) in [0, 1]
    assert ours.shape == (2, 3, 64, 64) and theirs.shape == (2, 64, 64, 3)
    assert np.abs(ours.permute(0, 2, 3, 1).numpy() - theirs).max() < 1e-4
    assert theirs.std() > 0.01  # a real image, not a constant
