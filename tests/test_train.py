"""Contrastive training: runs, checkpoints in safetensors, resumes exactly, exports a loadable local-dir."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_recipe
from triptych import clip
from triptych.clip.losses import MultiPositiveClipLoss, MultiPositiveSigLipLoss
from triptych.clip.train import WorldBatches, main, train


def test_batches_are_addressed_by_step():
    data = WorldBatches(seed=3, batch_size=6, twins=0.5)
    a, b = data(5), data(5)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[1] != data(6)[1]
    pixels, texts, match = a
    assert pixels.shape == (6, 3, 64, 64) and pixels.dtype == torch.uint8 and len(texts) == 6
    assert match.shape == (6, 6) and match.diagonal().all()


def test_multi_positive_losses_reduce_to_the_stock_ones_without_duplicates():
    torch.manual_seed(0)
    img, txt = (
        torch.nn.functional.normalize(torch.randn(5, 8), dim=-1),
        torch.nn.functional.normalize(torch.randn(5, 8), dim=-1),
    )
    scale, eye = torch.tensor(10.0), torch.eye(5, dtype=torch.bool)
    stock = open_clip.loss.ClipLoss()(img, txt, scale)
    assert torch.allclose(MultiPositiveClipLoss()(img, txt, scale, eye), stock, atol=1e-6)
    bias = torch.tensor(-2.0)
    stock_sig = open_clip.loss.SigLipLoss()(img, txt, scale, bias)
    assert torch.allclose(MultiPositiveSigLipLoss()(img, txt, scale, bias, eye), stock_sig, atol=1e-6)
    both = eye.clone()
    both[0, 1] = both[1, 0] = True  # a second true pair changes the targets, so the loss
    assert not torch.allclose(MultiPositiveClipLoss()(img, txt, scale, both), stock)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_training_exports_a_loadable_encoder(tmp_path, loss):
    recipe = tiny_recipe(loss)
    info = train(recipe, tmp_path / "out", tmp_path / "work", workers=0)
    assert info["steps"] == 4 and info["final_loss"] > 0
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json", "manifest.json"} <= files
    assert all(v.dtype == torch.float16 for v in load_file(tmp_path / "out/open_clip_model.safetensors").values())
    enc = clip.load(str(tmp_path / "out"), device="cpu")
    assert enc.kind == loss
    assert enc.classify([Path("weights/examples/scene-1.png")], ["a red circle", "a blue star"]).shape == (1, 2)


def test_resume_continues_exactly(tmp_path):
    recipe = tiny_recipe(steps=4)
    train(recipe, tmp_path / "a", tmp_path / "work_a", workers=0)
    assert train(recipe, tmp_path / "b", tmp_path / "work_b", workers=0, stop_after=2) is None
    state = json.loads((tmp_path / "work_b/checkpoint/state.json").read_text())
    assert state["state"]["step"] == 2 and not (tmp_path / "b").exists()
    assert (tmp_path / "work_b/checkpoint/optimizer.safetensors").is_file()
    train(recipe, tmp_path / "b", tmp_path / "work_b", workers=0)
    a = load_file(tmp_path / "a/open_clip_model.safetensors")
    b = load_file(tmp_path / "b/open_clip_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = train(recipe, tmp_path / "c", tmp_path / "work_b", workers=0)  # a finished run just re-exports
    assert (
        again["steps"] == 4
        and again["final_loss"] == json.loads((tmp_path / "b/training.json").read_text())["final_loss"]
    )


def test_cli_overrides_and_validation(tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(tiny_recipe()))
    main(
        [
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "out"),
            "--workdir",
            str(tmp_path / "w"),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
        ]
    )
    assert json.loads((tmp_path / "out/training.json").read_text())["steps"] == 2
    with pytest.raises(SystemExit):
        main(["--recipe", str(recipe), "--steps", "0"])
