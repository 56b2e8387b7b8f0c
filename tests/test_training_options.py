"""How a recipe runs, not what it trains: precision from accelerate's own settings, gradient accumulation that
trains the same model, trackers that receive loss, learning rate and sample grids, and diffusers' EMAModel."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_vlm import RECIPE as VLM_RECIPE
from tests.tiny_diffusion import tiny_recipe
from tests.tiny_models import make_tiny_encoder_dir
from tests.tiny_models import tiny_recipe as tiny_clip_recipe
from triptych.clip.train import ONE_BATCH
from triptych.clip.train import train as train_clip
from triptych.core.training import TrainingOptions, mixed_precision, split_batch, training_parser
from triptych.diffusion.ema import EMA
from triptych.diffusion.train import train as train_diffusion
from triptych.vlm.train import train as train_vlm


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return str(make_tiny_encoder_dir(tmp_path_factory.mktemp("enc")))


# ---------------------------------------------------------------------- precision
def test_precision_comes_from_the_flag_then_accelerate_then_the_device(monkeypatch, tmp_path):
    import accelerate.commands.config.config_args as config_args

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(config_args, "default_config_file", str(tmp_path / "none.yaml"))
    assert mixed_precision(None) == ("bf16" if torch.cuda.is_available() else "no")  # nothing configured
    config = tmp_path / "default_config.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: fp16\n")
    monkeypatch.setattr(config_args, "default_config_file", str(config))
    assert mixed_precision(None) == "fp16"  # `accelerate config` wrote it
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert mixed_precision(None) is None  # under `accelerate launch`: Accelerator reads its setting itself
    assert mixed_precision("no") == "no"  # the flag wins over all


def test_bad_options_are_refused():
    parser = training_parser("t", "", "r.json", "out", "work")
    for bad in (
        ["--gradient-accumulation-steps", "0"],
        ["--gradient-accumulation-steps", "x"],
        ["--mixed-precision", "fp64"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        TrainingOptions(gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="the whole batch's negatives"):
        train_clip(tiny_clip_recipe(), "out", "work", options=TrainingOptions(gradient_accumulation_steps=2))
    assert "negatives" in ONE_BATCH


# ---------------------------------------------------------------------- gradient accumulation
def test_split_batch_cuts_every_field_alike():
    images, prompts = torch.arange(8).view(4, 2), ["a", "b", "c", "d"]
    first, second = split_batch([images, prompts], 2)  # the DataLoader hands tuples over as lists
    assert torch.equal(first[0], images[:2]) and first[1] == ["a", "b"] and second[1] == ["c", "d"]
    with pytest.raises(ValueError, match="3 equal micro-batches"):
        split_batch((images, prompts), 3)


def test_accumulated_micro_batches_train_the_same_vlm(tmp_path, encoder_dir):
    recipe = {**VLM_RECIPE, "encoder": encoder_dir}
    train_vlm(recipe, tmp_path / "one", tmp_path / "w1", workers=0)
    options = TrainingOptions(gradient_accumulation_steps=2)
    train_vlm(recipe, tmp_path / "two", tmp_path / "w2", workers=0, options=options)
    one, two = load_file(tmp_path / "one/model.safetensors"), load_file(tmp_path / "two/model.safetensors")
    initial_gap = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert initial_gap < 2e-3  # fp16 exports of the same training (float sums in another order)
    four = TrainingOptions(gradient_accumulation_steps=4)
    train_vlm(recipe, tmp_path / "four", tmp_path / "w4", workers=0, options=four)
    other = load_file(tmp_path / "four/model.safetensors")
    assert max((one[k].float() - other[k].float()).abs().max().item() for k in one) < 2e-3


# ---------------------------------------------------------------------- trackers
def test_tensorboard_receives_loss_lr_and_sample_grids(tmp_path, encoder_dir):
    options = TrainingOptions(log_with=("tensorboard",))
    train_diffusion(tiny_recipe(encoder_dir), tmp_path / "out", tmp_path / "work", workers=0, options=options)
    runs = {p.parent for p in (tmp_path / "work/logs").rglob("events.out.tfevents.*")}
    tags: dict[str, list[str]] = {"scalars": [], "images": []}
    for run in runs:
        events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        for kind in tags:
            tags[kind] += events.Tags()[kind]
    for part in ("vae", "prior", "decoder"):
        assert f"{part}/loss" in tags["scalars"] and any(t.startswith(f"{part}/lr/") for t in tags["scalars"])
    for part in ("vae", "decoder"):  # image grids; the prior's samples are a metric
        assert any(t.startswith(f"{part}/samples") for t in tags["images"]), tags["images"]
    assert "prior/cosine_to_true_image" in tags["scalars"]


# ---------------------------------------------------------------------- EMA
def test_our_ema_is_diffusers_ema_model_and_resumes_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    theirs = EMAModel(model.parameters(), decay=0.99, update_after_step=-1, foreach=True)
    ours = EMA(model, 0.99)

    def train_steps(n: int, *emas) -> None:
        for _ in range(n):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
            for ema in emas:
                ema.update(model) if isinstance(ema, EMA) else ema.step(model.parameters())

    train_steps(10, ours, theirs)
    saved = copy.deepcopy(ours.model.state_dict())  # a checkpoint at update 10
    resumed = EMA(model, 0.99)
    resumed.model.load_state_dict(saved)
    resumed.restart(10)
    train_steps(10, ours, theirs, resumed)
    for mine, again, reference in zip(ours.model.parameters(), resumed.model.parameters(), theirs.shadow_params):
        assert torch.equal(mine, reference) and torch.equal(again, reference)
    assert not torch.equal(next(ours.model.parameters()), next(model.parameters()))  # an average, not a copy
