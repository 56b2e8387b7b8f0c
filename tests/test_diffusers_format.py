"""The generator as a diffusers user meets it: a pooled-layout folder opens with DiffusionPipeline (its decoder
half, a KandinskyV22Pipeline) and draws our image; the bundled spatial folder, which that pipeline cannot feed,
carries no index; save_pretrained round-trips; and the call takes diffusers' argument names and returns `.images`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, KandinskyV22Pipeline
from huggingface_hub import ModelCard
from PIL import Image

from tests.tiny_diffusion import pooled, tiny_recipe
from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip, diffusion
from triptych.core.errors import InvalidSettingError
from triptych.core.manifest import verify_manifest
from triptych.diffusion.train import train
from triptych.weights import SHAPES_DIR

FAST = {"num_inference_steps": 4, "prior_num_inference_steps": 4}


@pytest.fixture(scope="module")
def gen(encoder):
    return diffusion.load("shapes", encoder=encoder)


@pytest.fixture(scope="module")
def pooled_folder(tmp_path_factory):
    """A tiny generator in the pooled layout (the one diffusers' pipeline can feed), trained in seconds."""
    root = tmp_path_factory.mktemp("pooled")
    encoder_dir = str(make_tiny_encoder_dir(root / "encoder"))
    train(pooled(tiny_recipe(encoder_dir)), root / "out", root / "work", workers=0)
    return root / "out", encoder_dir


def test_a_pooled_decoder_half_opens_in_diffusers_and_draws_our_image(pooled_folder):
    folder, encoder_dir = pooled_folder
    verify_manifest(folder)
    assert "model_index.json" in json.loads((folder / "manifest.json").read_text())["files"]
    gen = diffusion.load(str(folder), encoder=clip.load(encoder_dir, device="cpu"))
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    assert isinstance(pipe, KandinskyV22Pipeline)
    pipe.set_progress_bar_config(disable=True)
    embeds = gen.image_condition([Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "black")])
    embeds = embeds + 0.1 * torch.randn(embeds.shape, generator=torch.Generator().manual_seed(0))
    ours = gen.decode_embeddings(embeds, seed=3, steps=6, guidance=4.0, scheduler="ddpm")
    theirs = pipe(
        image_embeds=embeds,
        negative_image_embeds=gen.zero_condition().expand(2, -1),
        height=64,
        width=64,
        num_inference_steps=6,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images  # (2, 64, 64, 3) in [0, 1]
    ours = np.stack([np.asarray(im) for im in ours]) / 255.0
    assert np.abs(ours - theirs).max() <= 1 / 255 + 1e-6  # the same image up to 8-bit rounding
    assert theirs.std() > 0.01  # not a blank canvas (the tiny decoder is trained for two steps)
    saved = gen.save_pretrained(folder.parent / "saved", encoder=encoder_dir)
    assert json.loads((saved / "model_index.json").read_text())["_class_name"] == "KandinskyV22Pipeline"
    for written in (folder, saved):  # the card tells the Hub diffusers opens it
        data = ModelCard.load(written / "README.md").data
        assert data.library_name == "diffusers" and "kandinsky" in data.tags


def test_the_bundled_spatial_generator_carries_no_index_and_round_trips(gen, tmp_path):
    folder = SHAPES_DIR / "diffusion"
    verify_manifest(folder)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert "model_index.json" not in files and "grid/grid_projection.safetensors" in files  # no pipeline feeds a grid
    out = gen.save_pretrained(tmp_path / "saved", encoder="shapes")
    verify_manifest(out)
    assert not (out / "model_index.json").exists()
    for written in (folder, out):  # nor does its card claim diffusers
        data = ModelCard.load(written / "README.md").data
        assert data.library_name == "triptych" and "kandinsky" not in data.tags
    assert json.loads((out / "prior" / "config.json").read_text())["_class_name"] == "CellPriorTransformer"
    again = diffusion.load(str(out), encoder=gen.encoder)
    assert again.defaults == gen.defaults
    settings = dict(seed=2, steps=4, prior_steps=4, output_type="np", progress=False)
    assert np.array_equal(gen.generate("a red circle", **settings), again.generate("a red circle", **settings))


def test_call_takes_diffusers_names_and_means_generate(gen):
    ours = gen.generate(["a red circle", "a blue star"], seed=7, steps=4, prior_steps=4, guidance=3.0, num_images=2,
                        output_type="np", progress=False)  # fmt: skip
    out = gen(["a red circle", "a blue star"], guidance_scale=3.0, num_images_per_prompt=2, output_type="np",
              generator=torch.Generator().manual_seed(7), **FAST)  # fmt: skip
    assert out.images.shape == (4, 64, 64, 3) and np.array_equal(out.images, ours)
    (pil,) = gen("a red circle", return_dict=False, **FAST)
    assert len(pil) == 1 and pil[0].size == (64, 64)
    assert gen("a red circle", output_type="pt", **FAST).images.shape == (1, 3, 64, 64)
    latents = gen("a red circle", output_type="latent", **FAST).images
    assert latents.shape == (1, gen.decoder.latent_channels, 16, 16)


def test_callback_on_step_end_sees_every_step_and_can_replace_the_latents(gen):
    steps = []

    def watch(pipe, step, timestep, kwargs):
        assert pipe is gen and set(kwargs) == {"latents"}
        steps.append(step)
        return kwargs

    def blank_last(pipe, step, timestep, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 3 else kwargs

    plain = gen("a red circle", output_type="np", callback_on_step_end=watch, **FAST).images
    assert steps == [0, 1, 2, 3]
    blanked = gen("a red circle", output_type="np", callback_on_step_end=blank_last, **FAST).images
    assert np.abs(plain - blanked).max() > 0.1  # the returned latents were decoded, not the loop's


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 128}, "height must be 64"),
        ({"generator": 5}, "torch.Generator"),
        ({"output_type": "bmp"}, "output_type"),
        ({"callback_on_step_end_tensor_inputs": ["prompt_embeds"]}, "only 'latents'"),
        ({"callback_on_step_end": "not callable"}, "callable"),
        ({"num_inference_steps": 0}, "steps"),
        ({"num_images_per_prompt": float("nan")}, "num_images"),
    ],
)
def test_call_refuses_what_it_cannot_honour(gen, kwargs, message):
    with pytest.raises(InvalidSettingError, match=message):
        gen("a red circle", **kwargs)
