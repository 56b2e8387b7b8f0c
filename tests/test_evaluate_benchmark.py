"""Evaluation and benchmark commands, and the bundled encoder's quality bar on fresh samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip
from triptych.apps.benchmarks.encoder import benchmark_classify
from triptych.apps.evaluation.encoder import evaluate_encoder
from triptych.apps.evaluation.main import THRESHOLDS, main
from triptych.apps.evaluation.zero_shot_tasks import TASKS, task_scenes
from triptych.world.edits import EDIT_KINDS

GENERATOR_TEST_PROMPTS = 10  # per category and split: (9 + 2) categories x 10 prompts x 4 images


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    return "local-dir:" + str(make_tiny_encoder_dir(tmp_path_factory.mktemp("eval")))


def test_task_scenes_follow_their_split():
    for task in TASKS:
        held = task_scenes(task, 50, seed=1, held_out=True)
        plain = task_scenes(task, 50, seed=1, held_out=False)
        assert all(s.has_held_out for s in held) and not any(s.has_held_out for s in plain)
        if task.single_object:
            assert all(len(s.objects) == 1 for s in held + plain)
        assert all(task.truth(s) in task.labels for s in held + plain)
    assert task_scenes(TASKS[0], 5, 1, False) == task_scenes(TASKS[0], 5, 1, False)
    assert task_scenes(TASKS[0], 5, 1, False) != task_scenes(TASKS[0], 5, 2, False)


def test_evaluate_command_writes_json_and_markdown(tmp_path, tiny_name, capsys):
    out_json, out_md = tmp_path / "scores.json", tmp_path / "scores.md"
    assert (
        main(
            [
                "clip",
                "--model",
                tiny_name,
                "--count",
                "10",
                "--seed",
                "3",
                "--device",
                "cpu",
                "--json",
                str(out_json),
                "--markdown",
                str(out_md),
            ]
        )
        == 0
    )
    report = json.loads(out_json.read_text())
    assert report["count"] == 10 and set(report["scores"]) == {"in_distribution", "held_out"}
    for split in report["scores"].values():
        assert set(split) == {t.name for t in TASKS} | set(EDIT_KINDS) and all(0 <= v <= 1 for v in split.values())
    table = out_md.read_text()
    assert table.count("\n") == 2 + len(TASKS) + len(EDIT_KINDS) and "| relation_inversion |" in table
    assert table in capsys.readouterr().out


def test_benchmark_reports_every_row(tiny_name):
    rows = dict(benchmark_classify(tiny_name, batch_size=4, num_labels=5, repeats=1, device="cpu", dtype=None))
    assert any("plain open_clip" in k for k in rows) and any("cached label set" in k for k in rows)
    ratio = float(rows["throughput ratio (triptych / open_clip)"].rstrip("x"))
    assert ratio > 0


@pytest.mark.slow
def test_bundled_encoder_meets_the_bar_on_fresh_samples(encoder):
    """1000 fresh scenes per task and split, a seed training never used."""
    scores = evaluate_encoder(encoder, count=1000, seed=20261123)
    for split, bars in THRESHOLDS.items():
        for task, bar in bars.items():
            assert scores[split][task] >= bar, (split, task, scores[split][task])


def test_bundled_encoder_names_the_examples(encoder):
    lines = Path("weights/examples/objects.txt").read_text().splitlines()
    labels = [line for line in lines if not line.startswith("#")]
    probs = encoder.classify(
        [Path("weights/examples/scene-1.png"), Path("weights/examples/scene-4.png")], labels, "world"
    )
    assert [labels[i] for i in probs.argmax(-1)] == ["a red circle", "a purple star"]  # the second is held out


@pytest.fixture(scope="module")
def captioner(encoder):
    from triptych import vlm

    return vlm.load("shapes", encoder=encoder)


@pytest.mark.slow
def test_bundled_vlm_meets_the_bar_on_fresh_samples(captioner):
    """1000 fresh scenes per task and split, a seed training never used."""
    from triptych.apps.evaluation.captioner import evaluate_captioner
    from triptych.apps.evaluation.main import VLM_THRESHOLDS

    scores = evaluate_captioner(captioner, count=1000, seed=20261123)
    for split, bars in VLM_THRESHOLDS.items():
        for task, bar in bars.items():
            assert scores[split][task] >= bar, (split, task, scores[split][task])


def test_bundled_vlm_describes_the_examples(captioner):
    from triptych.world import caption, parse_image

    paths = [Path(f"weights/examples/scene-{i}.png") for i in range(1, 5)]
    truths = [caption(parse_image(clip.load_image(p))) for p in paths]  # the parser is exact on clean renders
    assert captioner.caption(paths[:3]) == truths[:3]
    assert captioner.ask(paths, "how many objects are there?") == [
        ("one", "two", "three")[len(parse_image(clip.load_image(p)).objects) - 1] for p in paths
    ]


@pytest.mark.slow
def test_bundled_generator_keeps_its_measured_scores(service):
    """Issue 14's overall, held-out and attribute-binding bars themselves, and floors under the rest of the scores
    measured on the bundled (spatial, cell-prior) generator with the strict judge on these very prompts and seed
    (model card: overall 0.861, held-out 0.613, single object 0.925, colours 0.950, two objects 0.800, counting
    0.850, position 0.500, attribute binding 0.825, absolute position 0.900; PSNR 35.1 dB on 500 scenes, here 100).
    Colours (0.950) and counting (0.850, 0.675 on --seed 1234's prompts) sit at or near their bars, so they are
    guarded by floors: another machine's arithmetic may flip a marginal image (one image is 0.025 of a category).
    Position (0.500; bar 0.70) and single object (0.925; bar 0.95) are under their bars; floors guard them.
    The pooled generator it replaced: 0.508 / 0.250."""
    from triptych.apps.evaluation.generator import evaluate_generator

    scores = evaluate_generator(
        service.generator,
        count=GENERATOR_TEST_PROMPTS,
        images_per_prompt=4,
        seed=20261123,
        vae_count=100,
        recovery_count=0,
    )
    ours, held = scores["in_distribution"], scores["held_out"]
    assert ours["overall"] >= 0.80 and held["overall"] >= 0.50, scores  # the bars
    assert ours["attribute_binding"] >= 0.70, scores  # the bar
    assert ours["absolute_position"] >= 0.80 and ours["single_object"] >= 0.85, scores
    assert ours["colors"] >= 0.85 and ours["two_objects"] >= 0.65, scores
    assert ours["counting"] >= 0.70 and ours["position"] >= 0.40, scores
    assert ours["vae_psnr_db"] >= 32.0, scores
