"""The generator on tiny models built here: diffusers parity, the pipeline API, training, saving and loading."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, KandinskyV22Img2ImgPipeline, KandinskyV22Pipeline
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.tiny_diffusion import pooled, tiny_recipe
from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip, diffusion
from triptych.core.errors import InvalidImageError, InvalidSettingError, InvalidTextError, WeightsError
from triptych.diffusion.decoder import DecoderStage, to_pixels
from triptych.diffusion.models import build_unet, build_vae, standardize_latents
from triptych.diffusion.schedulers import make_scheduler
from triptych.diffusion.train import train
from triptych.world import render, sample_scene


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return str(make_tiny_encoder_dir(tmp_path_factory.mktemp("gen_enc")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, encoder_dir):
    folder = tmp_path_factory.mktemp("gen")
    info = train(tiny_recipe(encoder_dir), folder / "out", folder / "work", workers=0)
    return folder / "out", info


@pytest.fixture(scope="module")
def gen(trained, encoder_dir):
    return diffusion.load(str(trained[0]), encoder=clip.load(encoder_dir, device="cpu"))


def random_decoder(seed: int = 0) -> tuple:
    """A random tiny UNet + VQModel in the bundled layouts, and the recipe's decoder scheduler config."""
    recipe = tiny_recipe("unused")
    torch.manual_seed(seed)
    vae = build_vae(recipe["vae"]["model"]).eval()
    unet = build_unet(recipe["decoder"]["model"], embed_dim=32, latent_channels=4, sample_size=16).eval()
    return unet, vae, recipe["decoder"]["scheduler"]


# ---------------------------------------------------------------------- parity with diffusers
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++"])
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_decoder_equals_kandinsky_pipeline(name, guidance):
    unet, vae, sched_cfg = random_decoder()
    embeds, negative = torch.randn(2, 32), torch.randn(2, 32)
    pipe = KandinskyV22Pipeline(unet=unet, scheduler=make_scheduler(name, sched_cfg), movq=vae)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        image_embeds=embeds,
        negative_image_embeds=negative,
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    ).images  # (N, H, W, 3) in [0, 1]
    stage = DecoderStage(unet, vae, make_scheduler(name, sched_cfg))
    latents = stage(embeds, negative, steps=4, guidance=guidance, generator=torch.Generator().manual_seed(7))
    ours = stage.decode(latents).permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape == (2, 64, 64, 3)
    assert np.abs(ours - theirs).max() < 1e-4
    assert theirs.std() > 0.01  # a real image, not a constant


def test_img2img_equals_kandinsky_img2img():
    unet, vae, sched_cfg = random_decoder(1)
    embeds, negative = torch.randn(1, 32), torch.randn(1, 32)
    image = render(sample_scene(3))
    pipe = KandinskyV22Img2ImgPipeline(unet=unet, scheduler=make_scheduler("ddim", sched_cfg), movq=vae)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        image=image,
        image_embeds=embeds,
        negative_image_embeds=negative,
        height=64,
        width=64,
        num_inference_steps=10,
        strength=0.6,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images
    stage = DecoderStage(unet, vae, make_scheduler("ddim", sched_cfg))
    pixels = to_pixels([image])
    latents = stage(
        embeds,
        negative,
        steps=10,
        guidance=4.0,
        strength=0.6,
        init_latents=stage.encode(pixels),
        generator=torch.Generator().manual_seed(3),
    )
    ours = stage.decode(latents).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - theirs).max() < 1e-4


def test_standardized_latents_decode_the_same():
    _, vae, _ = random_decoder(2)
    pixels = torch.from_numpy(np.stack([np.asarray(render(sample_scene(i)), np.float32) for i in range(8)]))
    pixels = pixels.permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(pixels).latents, force_not_quantize=True).sample
        standardize_latents(vae, pixels)
        latents = vae.encode(pixels).latents
        after = vae.decode(latents, force_not_quantize=True).sample
    assert torch.allclose(latents.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(latents.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3)
    assert torch.allclose(before, after, atol=1e-4)


# ---------------------------------------------------------------------- training and files
def test_training_writes_the_diffusers_layout(trained):
    out, info = trained
    for folder in ("prior", "unet", "movq"):
        config = json.loads((out / folder / "config.json").read_text())
        weights = load_file(out / folder / "diffusion_pytorch_model.safetensors")
        assert config["_class_name"] and all(t.dtype == torch.float16 for t in weights.values())
    assert json.loads((out / "scheduler/scheduler_config.json").read_text())["_class_name"] == "DDPMScheduler"
    assert json.loads((out / "prior_scheduler/scheduler_config.json").read_text())["_class_name"] == "UnCLIPScheduler"
    assert set(info["parts"]) == {"vae", "prior", "decoder"} and info["train_seconds"] > 0
    assert (out / "manifest.json").is_file() and not list(out.rglob("*.bin"))


def test_resume_is_exact(tmp_path, encoder_dir):
    recipe = tiny_recipe(encoder_dir, steps=2)
    straight = tmp_path / "straight"
    train(recipe, straight / "out", straight / "work", workers=0)
    parts = tmp_path / "parts"
    runs = 0
    while train(recipe, parts / "out", parts / "work", workers=0, stop_after=1) is None:
        runs += 1
    assert runs >= 3  # every part stopped half-way at least once
    for folder in ("movq", "prior", "unet"):
        a = load_file(straight / "out" / folder / "diffusion_pytorch_model.safetensors")
        b = load_file(parts / "out" / folder / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), folder


def test_recipe_lr_horizons_reach_the_optimizer(tmp_path, encoder_dir):
    """The decoder's `lr_horizons` drive its learning rate: at step 2 of 4 with a horizon at 3, the extended
    schedule's lr, not the plain cosine's."""
    from triptych.core.training import lr_at

    recipe = tiny_recipe(encoder_dir, steps=4)
    recipe["decoder"]["lr_horizons"] = [3]
    state = tmp_path / "work/decoder/checkpoint/state.json"
    while not (state.is_file() and json.loads(state.read_text())["state"]["step"] == 3):
        assert train(recipe, tmp_path / "out", tmp_path / "work", workers=0, stop_after=1) is None
    lr = json.loads(state.read_text())["param_groups"][0]["lr"]  # the lr step 2 ran with
    base = recipe["decoder"]["lr"]
    assert lr == pytest.approx(lr_at(2, base, 1, 4, horizons=[3]))
    assert lr != pytest.approx(lr_at(2, base, 1, 4))


def test_init_fine_tunes_from_a_trained_generator(trained, tmp_path, encoder_dir):
    """--init: every part starts from the folder's weights (the VAE kept as it is): with a learning rate of 0 the
    export equals the init, while the same run from scratch does not; a model that does not fit is refused. The
    grid projection is the init's, not a refit (here on other images, as a refit's arbitrary signs could be)."""
    recipe = tiny_recipe(encoder_dir)
    for part in ("prior", "decoder"):
        recipe[part]["lr"] = 0.0
    recipe["decoder"]["grid_samples"] = 8  # a refit would differ from the init's (16 images)
    info = train(recipe, tmp_path / "tuned", tmp_path / "work", workers=0, init=trained[0])
    assert info["init"] == str(trained[0]) and info["parts"]["vae"]["init"] == str(trained[0])
    assert info["parts"]["vae"]["step"] == 0 and info["parts"]["vae"]["from_init"]["step"] > 0  # not trained here
    with pytest.raises(ValueError, match="holds a run started from"):  # the work folder is that fine-tune's
        train(recipe, tmp_path / "other", tmp_path / "work", workers=0)
    scratch = train(recipe, tmp_path / "scratch", tmp_path / "work_scratch", workers=0)
    assert scratch is not None
    for folder in ("movq", "prior", "unet"):
        init = load_file(trained[0] / folder / "diffusion_pytorch_model.safetensors")
        tuned = load_file(tmp_path / "tuned" / folder / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(init[k], tuned[k]) for k in init), folder
        if folder != "movq":  # the scratch run trains its own VAE
            fresh = load_file(tmp_path / "scratch" / folder / "diffusion_pytorch_model.safetensors")
            assert any(not torch.equal(init[k], fresh[k]) for k in init), folder
    wider = tiny_recipe(encoder_dir)
    wider["decoder"]["model"]["block_out_channels"] = [16, 48]
    with pytest.raises(WeightsError, match="unet/ does not fit"):
        train(wider, tmp_path / "bad", tmp_path / "work_bad", workers=0, init=trained[0])
    init_grid, tuned_grid, refit = (
        load_file(f / "grid/grid_projection.safetensors")
        for f in (trained[0], tmp_path / "tuned", tmp_path / "scratch")
    )
    assert init_grid.keys() == tuned_grid.keys() and all(torch.equal(v, tuned_grid[k]) for k, v in init_grid.items())
    assert any(not torch.equal(v, refit[k]) for k, v in init_grid.items())  # what a refit on 8 images gives
    gridless = shutil.copytree(trained[0], tmp_path / "gridless")
    shutil.rmtree(gridless / "grid")
    with pytest.raises(WeightsError, match="has no grid/, the recipe trains the spatial layout"):
        train(tiny_recipe(encoder_dir), tmp_path / "bad2", tmp_path / "work_bad2", workers=0, init=gridless)
    assert not (tmp_path / "work_bad2" / "finished").exists()  # refused before the init's VAE was copied
    with pytest.raises(WeightsError, match="has grid/, the recipe trains the pooled layout"):
        train(pooled(tiny_recipe(encoder_dir)), tmp_path / "bad3", tmp_path / "work_bad3", workers=0, init=trained[0])
    narrower = tiny_recipe(encoder_dir)
    narrower["decoder"]["grid_channels"] = 8
    with pytest.raises(WeightsError, match="its grid/ has 16 channels, the recipe's decoder reads 8"):
        train(narrower, tmp_path / "bad4", tmp_path / "work_bad4", workers=0, init=trained[0])


def test_sample_grids_are_written(trained):
    work = trained[0].parent / "work"
    assert list((work / "vae/samples").glob("*.png")) and list((work / "decoder/samples").glob("*.png"))
    assert (work / "prior/samples/metrics.jsonl").is_file()


def test_tampered_or_pickled_weights_are_refused(trained, tmp_path, encoder_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained[0], bad)
    path = bad / "unet/diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsError, match="manifest|sha256|checksum"):
        diffusion.load(str(bad), encoder=clip.load(encoder_dir, device="cpu"))
    (bad / "manifest.json").unlink()
    path.unlink()
    torch.save({}, bad / "unet/diffusion_pytorch_model.bin")  # a pickle where safetensors belong
    with pytest.raises(WeightsError, match="safetensors"):
        diffusion.load(str(bad), encoder=clip.load(encoder_dir, device="cpu"))
    with pytest.raises(WeightsError, match="generator.json"):
        diffusion.load(str(tmp_path))


# ---------------------------------------------------------------------- the API
FAST = {"steps": 3, "prior_steps": 3, "progress": False}


def test_generate_is_seeded_and_shares_the_encoder(gen):
    a = gen.generate(["a red circle", "two stars"], seed=1, num_images=2, **FAST)
    b = gen.generate(["a red circle", "two stars"], seed=1, num_images=2, **FAST)
    c = gen.generate(["a red circle", "two stars"], seed=2, num_images=2, **FAST)
    assert len(a) == 4 and all(im.size == (64, 64) and im.mode == "RGB" for im in a)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, c))
    assert gen.prior.encoder is gen.encoder


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "ddpm"])
def test_schedulers_swap_and_the_callback_sees_every_step(gen, scheduler):
    seen = []
    images = gen.generate("a square", scheduler=scheduler, callback=lambda i, t, x: seen.append((i, t)), **FAST)
    assert len(images) == 1 and [i for i, _ in seen] == [0, 1, 2]
    assert type(gen.decoder.scheduler) is diffusion.SCHEDULERS[scheduler][0]


def test_guidance_negative_prompt_best_of_and_candidates(gen):
    plain = gen.generate("a star", seed=3, guidance=1.0, prior_guidance=1.0, **FAST)[0]
    guided = gen.generate("a star", seed=3, guidance=6.0, **FAST)[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(guided))
    neg = gen.generate(["a star", "a circle"], negative_prompt="a red star", seed=3, **FAST)
    assert len(neg) == 2
    best = gen.generate("a star", seed=3, num_images=2, best_of=3, prior_candidates=2, **FAST)
    assert len(best) == 2


def test_prior_candidates_keep_the_draw_closest_to_the_text(gen):
    prompts = ["a red circle", "three stars"]
    drawn, _ = gen.prior(prompts, generator=torch.Generator().manual_seed(0), steps=3, num_images=4, progress=False)
    kept, _ = gen.prior(prompts, generator=torch.Generator().manual_seed(0), steps=3, candidates=4, progress=False)
    text = gen.encoder.text_states(prompts).embeds.float()
    d = text.shape[1]  # the conditions hold the image embedding first, then the grid
    cos = torch.nn.functional.cosine_similarity(drawn[:, :d].view(2, 4, -1).float(), text[:, None], dim=-1)  # (2, 4)
    cos_kept = torch.nn.functional.cosine_similarity(kept[:, :d].float(), text, dim=-1)
    assert torch.allclose(cos_kept, cos.max(dim=1).values, atol=1e-5)


def test_variations_interpolation_and_img2img(gen):
    image = render(sample_scene(5))
    assert len(gen.variations(image, num_images=3, **FAST)) == 3
    mixed = gen.interpolate(["a red circle", image], [0.3, 0.7], num_images=2, **FAST)
    assert len(mixed) == 2
    kept = gen.img2img(image, "a blue star", strength=0.0, **FAST)[0]  # strength 0: the VAE's reconstruction
    recon = gen.decoder.decode(gen.decoder.encode(gen._to_pixels(image)))
    assert np.abs(np.asarray(kept, np.float32) / 255 - recon[0].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    changed = gen.img2img(image, "a blue star", strength=1.0, **FAST)[0]
    assert not np.array_equal(np.asarray(changed), np.asarray(kept))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"prompts": ""}, InvalidTextError),
        ({"prompts": []}, InvalidTextError),
        ({"prompts": "x" * 10_000}, InvalidTextError),
        ({"prompts": "a star", "negative_prompt": ["a", "b"]}, InvalidTextError),
        ({"prompts": "a star", "steps": 0}, InvalidSettingError),
        ({"prompts": "a star", "steps": -3}, InvalidSettingError),
        ({"prompts": "a star", "steps": 1001}, InvalidSettingError),
        ({"prompts": "a star", "steps": 2.5}, InvalidSettingError),
        ({"prompts": "a star", "guidance": math.nan}, InvalidSettingError),
        ({"prompts": "a star", "guidance": math.inf}, InvalidSettingError),
        ({"prompts": "a star", "guidance": -1.0}, InvalidSettingError),
        ({"prompts": "a star", "prior_guidance": math.nan}, InvalidSettingError),
        ({"prompts": "a star", "num_images": 0}, InvalidSettingError),
        ({"prompts": "a star", "num_images": 10_000}, InvalidSettingError),
        ({"prompts": ["a star"] * 20, "num_images": 16}, InvalidSettingError),
        ({"prompts": "a star", "seed": -1}, InvalidSettingError),
        ({"prompts": "a star", "scheduler": "euler"}, InvalidSettingError),
        ({"prompts": "a star", "temperature": 1.0}, InvalidSettingError),
    ],
)
def test_bad_generation_input_is_refused(gen, kwargs, error):
    with pytest.raises(error):
        gen.generate(**kwargs, progress=False)


def test_bad_image_input_is_refused(gen, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad in (empty, b"not an image", 42):
        with pytest.raises(InvalidImageError):
            gen.variations(bad, **FAST)
    image = Image.new("RGB", (64, 64))
    for strength in (-0.1, 1.5, math.nan):
        with pytest.raises(InvalidSettingError, match="strength"):
            gen.img2img(image, "a star", strength=strength, **FAST)
    for items, weights in ((["a star"], [1.0, 2.0]), (["a star", image], [0.0, 0.0]), (["a star"], [math.nan])):
        with pytest.raises(InvalidSettingError, match="weight"):
            gen.interpolate(items, weights, **FAST)


def test_decoder_scheduler_default_is_ddpm_class_on_disk(trained):
    assert isinstance(DDPMScheduler.from_pretrained(trained[0] / "scheduler"), DDPMScheduler)


# ---------------------------------------------------------------------- CLI, evaluation, benchmark
def test_generate_cli_writes_files_and_a_grid(trained, tmp_path, capsys):
    from triptych.apps.cli.generate import main

    out, grid_path = tmp_path / "imgs", tmp_path / "grid.png"
    args = ["--model", str(trained[0]), "--steps", "2", "--prior-steps", "2", "--out", str(out)]
    assert main(["a red circle", "two stars", "--num-images", "2", "--grid", str(grid_path), *args]) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files][:2] == ["000-a-red-circle.png", "001-a-red-circle.png"] and len(files) == 4
    assert Image.open(grid_path).size == (2 * 66 + 2, 2 * 66 + 2)
    scene = tmp_path / "scene.png"
    render(sample_scene(1)).save(scene)
    assert main(["--variations", str(scene), "--num-images", "2", *args]) == 0
    assert main(["--interpolate", "a star", "--image", str(scene), "--weights", "1", "3", *args]) == 0
    assert main(["a blue star", "--init-image", str(scene), "--strength", "0.5", *args]) == 0
    assert not list(out.glob(".*.tmp"))
    capsys.readouterr()
    assert main(["", *args]) == 2 and "empty" in capsys.readouterr().err
    assert main(["a star", "--steps", "0", "--out", str(out), "--model", str(trained[0])]) == 2
    assert main(["--variations", str(tmp_path / "missing.png"), *args]) == 2
    assert main([*args]) == 2


def test_generator_evaluation_and_benchmark_rows(gen):
    from triptych.apps.benchmarks.generator import benchmark_generator
    from triptych.apps.evaluation.generator import evaluate_generator
    from triptych.world import GENEVAL_CATEGORIES

    scores = evaluate_generator(gen, count=1, images_per_prompt=1, vae_count=4, steps=2, prior_steps=2)
    assert set(GENEVAL_CATEGORIES) < set(scores["in_distribution"])
    assert {"colors", "attribute_binding", "overall"} <= set(scores["held_out"])
    assert all(0 <= v <= 1 for k, v in scores["in_distribution"].items() if k in GENEVAL_CATEGORIES)
    assert 0 < scores["in_distribution"]["vae_psnr_db"] < 100
    rows = dict(benchmark_generator(gen.name, None, 2, (2,), (2,), 0, 1, "cpu", None))
    assert (
        "DDIM 2 steps: KandinskyV22Pipeline s/image" in rows
        and "x the time" in rows["DDIM 2 steps: triptych decoder s/image"]
    )
    # the tiny generator has the spatial layout: pipeline vs loop on a pooled twin, the real grid decoder apart
    assert gen.decoder.grid is not None and "pooled twin" in rows["decoder layout"]
    assert "x the pooled twin's time" in rows["DDIM 2 steps: triptych grid decoder (+16 input channels) s/image"]


def test_benchmark_twin_is_the_grid_unet_without_the_grid_channels():
    from triptych.apps.benchmarks.generator import pooled_twin
    from triptych.diffusion.grid import GridProjection

    recipe = tiny_recipe("unused")
    torch.manual_seed(0)
    vae = build_vae(recipe["vae"]["model"]).eval()
    unet = build_unet(recipe["decoder"]["model"], embed_dim=32, latent_channels=4, sample_size=16, grid_channels=16)
    grid = GridProjection.fit(torch.randn(40, 9, 32), 16)
    stage = DecoderStage(unet, vae, make_scheduler("ddim", recipe["decoder"]["scheduler"]), grid=grid)
    twin = pooled_twin(stage)
    assert twin.grid is None and twin.movq is vae and twin.condition_dim == 32
    changed = {k for k in unet.config if unet.config[k] != twin.unet.config[k]}
    assert changed == {"in_channels"} and twin.unet.config.in_channels == 4
    assert twin.unet.dtype == unet.dtype and not twin.unet.training
    assert twin(torch.randn(2, 32), torch.randn(2, 32), steps=2, progress=False).shape == (2, 4, 16, 16)


def test_best_of_keeps_the_draw_the_encoder_finds_closest_to_the_prompt(gen):
    drawn = gen.generate("a red circle", seed=4, num_images=3, **FAST)  # the same three draws best_of=3 makes
    kept = gen.generate("a red circle", seed=4, best_of=3, **FAST)[0]
    scores = gen.encoder.encode_image(drawn) @ gen.encoder.encode_text("a red circle")[0]
    assert np.array_equal(np.asarray(kept), np.asarray(drawn[int(scores.argmax())]))


def test_a_pooled_export_over_a_grid_one_keeps_no_grid(trained, tmp_path, encoder_dir):
    out = tmp_path / "out"
    shutil.copytree(trained[0], out)
    assert (out / "grid").is_dir()
    train(pooled(tiny_recipe(encoder_dir)), out, tmp_path / "work", workers=0)
    assert not (out / "grid").exists()  # an old model part is never carried into a new export
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "KandinskyV22Pipeline"
    gen = diffusion.load(str(out), encoder=clip.load(encoder_dir, device="cpu"))
    assert gen.decoder.grid is None and len(gen.generate("a red circle", **FAST)) == 1


def test_a_grid_generator_saves_and_loads_back_without_a_diffusers_index(gen, trained, tmp_path):
    assert not (trained[0] / "model_index.json").exists()  # KandinskyV22Pipeline cannot feed the grid channels
    gen.generate("a star", scheduler="dpm++", **FAST)  # a call that switches the scheduler must not be saved
    out = gen.save_pretrained(tmp_path / "saved", encoder="tiny")
    assert not (out / "model_index.json").exists() and (out / "grid" / "grid_projection.safetensors").is_file()
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text()) == json.loads(
        (trained[0] / "scheduler" / "scheduler_config.json").read_text()
    )
    again = diffusion.load(str(out), encoder=gen.encoder)
    assert json.loads((out / "generator.json").read_text())["encoder"] == "tiny"
    first, second = (g.generate("a red circle", output_type="pt", **FAST) for g in (gen, again))
    assert torch.equal(first, second)


def test_a_spatial_prior_may_be_wider_than_its_text(tmp_path, encoder_dir):
    """A spatial prior predicts the pooled embedding and the grid (32 + 9 x 16 values here) from a 32-wide text;
    it may be wider than that text: its token states are zero-padded into diffusers' projection, so only the
    projection's first 32 input columns are read, and the folder trains, loads and generates."""
    recipe = tiny_recipe(encoder_dir)
    recipe["prior"]["model"].pop("type")  # the flat PriorTransformer (the recipe's spatial prior is the cell prior)
    recipe["prior"]["model"].update(num_attention_heads=4, attention_head_dim=16)  # 64 wide, the text 32
    train(recipe, tmp_path / "out", tmp_path / "work", workers=0)
    wide = diffusion.load(str(tmp_path / "out"), encoder=clip.load(encoder_dir, device="cpu"))
    proj = wide.prior.prior.encoder_hidden_states_proj
    assert proj.in_features == 32 + 9 * 16 and wide.prior.prior.config.num_attention_heads == 4

    def draw() -> torch.Tensor:
        return wide.prior(["a red circle"], generator=torch.Generator().manual_seed(0), steps=3, progress=False)[0]

    before = draw()
    with torch.no_grad():
        proj.weight[:, 32:].normal_()  # the padded columns: nothing reaches them
    assert torch.equal(before, draw())
    with torch.no_grad():
        proj.weight[:, :32].normal_()  # the text's own columns: the draw follows them
    assert not torch.equal(before, draw())
    assert len(wide.generate("two stars", **FAST)) == 1


def test_a_cell_prior_generator_trains_saves_loads_and_generates(tmp_path, encoder_dir):
    """The spatial layout's cell prior (one token per grid cell plus the pooled one) through the whole path:
    trainer, export, load, the prior loop, save_pretrained and load again (identical images)."""
    recipe = tiny_recipe(encoder_dir)
    recipe["prior"]["model"] = {"type": "cells", "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1}
    train(recipe, tmp_path / "out", tmp_path / "work", workers=0)
    config = json.loads((tmp_path / "out/prior/config.json").read_text())
    assert config["_class_name"] == "CellPriorTransformer" and config["cells"] == 9
    encoder = clip.load(encoder_dir, device="cpu")
    cells = diffusion.load(str(tmp_path / "out"), encoder=encoder)
    drawn, _ = cells.prior(["a red circle"], generator=torch.Generator().manual_seed(0), steps=3, progress=False)
    assert drawn.shape == (1, 32 + 9 * 16) and bool(torch.isfinite(drawn).all())
    first = cells.generate("two stars", output_type="pt", **FAST)
    again = diffusion.load(str(cells.save_pretrained(tmp_path / "saved", encoder="tiny")), encoder=encoder)
    assert torch.equal(first, again.generate("two stars", output_type="pt", **FAST))


def test_a_prior_folder_naming_another_class_is_refused(trained, tmp_path, encoder_dir):
    """config.json's _class_name picks the prior class from an allow-list; any other name is refused, never
    looked up."""
    folder = tmp_path / "gen"
    shutil.copytree(trained[0], folder)
    path = folder / "prior/config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_class_name": "UNet2DConditionModel"}))
    (folder / "manifest.json").unlink(missing_ok=True)
    with pytest.raises(WeightsError, match="_class_name"):
        diffusion.load(str(folder), encoder=clip.load(encoder_dir, device="cpu"))


def test_a_grid_that_does_not_fit_is_refused_at_load(trained, tmp_path, encoder_dir):
    from triptych.diffusion.grid import GridProjection

    folder = tmp_path / "gen"
    shutil.copytree(trained[0], folder)
    grid = GridProjection.from_pretrained(folder / "grid")
    four_cells = GridProjection(grid.mean, grid.components, grid.scale, cells=4)  # a 2 x 2 grid: not this encoder's
    four_cells.save(folder / "grid")
    (folder / "manifest.json").unlink()
    with pytest.raises(WeightsError, match="do not fit together"):
        diffusion.load(str(folder), encoder=clip.load(encoder_dir, device="cpu"))
    state = {"mean": grid.mean, "components": grid.components, "scale": grid.scale, "cells": torch.tensor(10**6)}
    save_file(state, str(folder / "grid/grid_projection.safetensors"))
    with pytest.raises(WeightsError, match="square grid"):
        diffusion.load(str(folder), encoder=clip.load(encoder_dir, device="cpu"))


def test_generate_many_gives_each_prompt_its_solo_images(service):
    """A batch of prompts with their own seeds (and negative prompts, best-of): each prompt's images are the ones
    its own `generate` call gives (to one level of 255, float rounding), whoever shares the batch."""
    gen = service.generator
    prompts, seeds = ["a red circle", "a blue square to the left of a green star", "a star"], [3, 8, 3]
    settings = dict(steps=6, prior_steps=4, num_images=2, scheduler="ddpm")
    many = gen.generate_many(prompts, seeds, **settings)
    for prompt, seed, images in zip(prompts, seeds, many, strict=True):
        solo = gen.generate(prompt, seed=seed, progress=False, **settings)
        assert max(np.abs(np.asarray(a, int) - np.asarray(b, int)).max() for a, b in zip(images, solo)) <= 1
    assert np.asarray(many[0][0]).tobytes() != np.asarray(many[2][0]).tobytes()  # same seed, other prompt
    negatives = ["a blue square", "a red star"]
    many = gen.generate_many(prompts[:2], [5, 6], negative_prompts=negatives, best_of=2, **settings)
    for prompt, seed, negative, images in zip(prompts, [5, 6], negatives, many):
        solo = gen.generate(prompt, seed=seed, negative_prompt=negative, best_of=2, progress=False, **settings)
        assert max(np.abs(np.asarray(a, int) - np.asarray(b, int)).max() for a, b in zip(images, solo)) <= 1
    with pytest.raises(InvalidSettingError, match="2 prompts but 1 seeds"):
        gen.generate_many(prompts[:2], [1], **settings)
    with pytest.raises(InvalidSettingError, match="does not use seed"):
        gen.generate_many(prompts[:2], [1, 2], seed=4)
