"""The VLM end to end on tiny models built here: staged training, resume, saving/loading, the Captioner API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip, vlm
from triptych.core.errors import InvalidImageError, InvalidTextError
from triptych.vlm.train import train
from triptych.world import export_folder

RECIPE = {
    "decoder": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
    },
    "stages": [
        {"name": "projector", "steps": 2, "train": ["projector"], "lr": {"projector": 1e-3}},
        {"name": "full", "steps": 2, "train": ["projector", "decoder"], "lr": {"projector": 1e-3, "decoder": 1e-3}},
    ],
    "batch_size": 4,
    "weight_decay": 0.0,
    "seed": 0,
    "save_every": 1,
}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return str(make_tiny_encoder_dir(tmp_path_factory.mktemp("vlm_enc")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, encoder_dir):
    folder = tmp_path_factory.mktemp("vlm")
    train({**RECIPE, "encoder": encoder_dir}, folder / "out", folder / "work", workers=0)
    return folder / "out"


def test_stages_freeze_what_they_do_not_train(tmp_path, encoder_dir):
    from accelerate.utils import set_seed

    from triptych.vlm.train import build

    recipe = {**RECIPE, "encoder": encoder_dir}
    set_seed(recipe["seed"])  # train() seeds the same way before building: this is its initial model
    initial = build(recipe, clip.load(encoder_dir, device="cpu"))[0].state_dict()
    assert train(recipe, tmp_path / "out", tmp_path / "work", workers=0, stop_after=2) is None
    after_stage_1 = load_file(tmp_path / "work/checkpoint/model.safetensors")
    train(recipe, tmp_path / "out", tmp_path / "work", workers=0)
    final = load_file(tmp_path / "work/checkpoint/model.safetensors")
    decoder_key, projector_key = "decoder.model.layers.0.mlp.up_proj.weight", "projector.fc1.weight"
    assert torch.equal(initial[decoder_key], after_stage_1[decoder_key])  # stage 1: decoder frozen
    assert not torch.equal(initial[projector_key], after_stage_1[projector_key])  # ... projector trained
    assert not torch.equal(after_stage_1[decoder_key], final[decoder_key])  # stage 2 trains the decoder


def test_resume_is_exact(tmp_path, encoder_dir, trained):
    recipe = {**RECIPE, "encoder": encoder_dir}
    train(recipe, tmp_path / "b", tmp_path / "work", workers=0, stop_after=3)
    train(recipe, tmp_path / "b", tmp_path / "work", workers=0)
    a, b = load_file(trained / "model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bring_your_own_data(tmp_path, encoder_dir):
    folder = export_folder(tmp_path / "data", 6, seed=1)
    info = train({**RECIPE, "encoder": encoder_dir}, tmp_path / "out", tmp_path / "w", workers=0, data=str(folder))
    assert info["data"] == str(folder)
    lines = [
        json.dumps({"image": p.name, "prompt": "what is this?", "answer": "a shape"})
        for p in sorted(folder.glob("*.png"))
    ]
    (folder / "qa.jsonl").write_text("\n".join(lines))
    train(
        {**RECIPE, "encoder": encoder_dir}, tmp_path / "out2", tmp_path / "w2", workers=0, data=str(folder / "qa.jsonl")
    )
    (folder / "bad.jsonl").write_text('{"image": "x.png"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        train(
            {**RECIPE, "encoder": encoder_dir},
            tmp_path / "o3",
            tmp_path / "w3",
            workers=0,
            data=str(folder / "bad.jsonl"),
        )


def test_captioner_shares_the_encoder_and_answers(trained, encoder_dir):
    enc = clip.load(encoder_dir, device="cpu")
    cap = vlm.load(str(trained), encoder=enc)
    assert cap.encoder is enc
    images = [Path("weights/examples/scene-1.png"), Path("weights/examples/scene-2.png")]
    captions = cap.caption(images, max_new_tokens=8)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    answers = cap.ask(images, ["what color is the background?", "how many objects are there?"], max_new_tokens=4)
    alone = [
        cap.ask(images[i], q, max_new_tokens=4)[0]
        for i, q in enumerate(["what color is the background?", "how many objects are there?"])
    ]
    assert answers == alone
    assert "".join(cap.stream(images[0], max_new_tokens=8)) == captions[0]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(questions=""), InvalidTextError),
        (dict(questions=" ".join(["word"] * 10_000)), InvalidTextError),
        (dict(max_new_tokens=0), ValueError),
        (dict(max_new_tokens=10**9), ValueError),
        (dict(temperature=float("nan")), ValueError),
        (dict(temperature=-1.0), ValueError),
        (dict(images=b"not an image"), InvalidImageError),
    ],
)
def test_bad_input_is_refused(trained, encoder_dir, kwargs, error):
    cap = vlm.load(str(trained), encoder=clip.load(encoder_dir, device="cpu"))
    args = {"images": Path("weights/examples/scene-1.png"), "questions": "how many objects are there?", **kwargs}
    with pytest.raises(error):
        cap.ask(**args)


def test_vlm_evaluation_scores_every_task(trained, encoder_dir):
    from triptych.apps.evaluation.captioner import evaluate_captioner, object_f1
    from triptych.world import QUESTION_TYPES, caption, sample_scene

    scenes = [sample_scene(i) for i in range(3)]
    assert object_f1([caption(s) for s in scenes], scenes) == 1.0
    assert object_f1(["nothing"] * 3, scenes) == 0.0
    cap = vlm.load(str(trained), encoder=clip.load(encoder_dir, device="cpu"))
    scores = evaluate_captioner(cap, count=3, seed=5)
    for split in ("in_distribution", "held_out"):
        assert set(scores[split]) == {"caption_exact", "object_f1"} | {f"q_{q}" for q in QUESTION_TYPES}
        assert all(0 <= v <= 1 for v in scores[split].values())


def test_caption_cli(trained, encoder_dir, capsys, tmp_path):
    from triptych.apps.cli.caption import main

    common = ["--model", str(trained), "--encoder", encoder_dir, "--device", "cpu", "--max-new-tokens", "6"]
    assert main(["weights/examples", "--format", "json", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and all("text" in r for r in rows)
    assert main(["weights/examples/scene-1.png", "--ask", "how many objects are there?", *common]) == 0
    assert capsys.readouterr().out.startswith("weights/examples/scene-1.png\t")
    assert main(["weights/examples/scene-1.png", "--stream", *common]) == 0
    streamed = capsys.readouterr().out.strip()
    assert (
        streamed
        == vlm.load(str(trained), encoder=clip.load(encoder_dir, device="cpu")).caption(
            Path("weights/examples/scene-1.png"), max_new_tokens=6
        )[0]
    )
    (tmp_path / "zero.png").write_bytes(b"")
    assert main([str(tmp_path / "zero.png"), "weights/examples/scene-1.png", *common]) == 1
    assert "skipped" in capsys.readouterr().err
    assert main(["weights/examples/scene-1.png", *common, "--max-new-tokens", "0"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err
    assert main(["weights/examples", "--stream", *common]) == 2


def test_vlm_benchmark_rows(trained, encoder_dir):
    from triptych.apps.benchmarks.captioner import benchmark_vlm

    rows = dict(benchmark_vlm(str(trained), encoder_dir, (1, 2), 4, 1, "cpu", None, compile=False))
    for bs in (1, 2):
        for name in ("triptych (KV cache)", "triptych (no cache)", "transformers generate (dynamic cache)",
                     "transformers generate (static cache)"):  # fmt: skip
            assert "tok/s" in rows[f"batch {bs}: {name}"]
    assert not any("compiled" in row for row in rows)


def test_loss_weighs_every_sample_equally_whatever_its_answer_length(encoder_dir):
    """A one-word answer counts as much as a long caption: the batch loss is the mean of the samples' own losses,
    each unaffected by the padding its neighbours bring."""
    from triptych.vlm.train import build

    torch.manual_seed(0)
    model, codec = build({**RECIPE, "encoder": encoder_dir}, clip.load(encoder_dir, device="cpu"))
    tokens = torch.randn(2, 9, model.config.vision_width)  # (B, cells, vision width)
    prompts = [codec.encode("caption"), codec.encode("how many objects are there?")]
    answers = [codec.encode("a large red circle in the top left and a small blue star in the center"), [5]]
    with torch.no_grad():
        batch = model(tokens, prompts, answers)
        alone = [model(tokens[i : i + 1], prompts[i : i + 1], answers[i : i + 1]) for i in range(2)]
    assert len(answers[0]) > 10
    torch.testing.assert_close(batch, (alone[0] + alone[1]) / 2, atol=1e-5, rtol=1e-5)
