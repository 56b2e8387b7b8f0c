"""`triptych`: the one command dispatching to every capability's script."""

from __future__ import annotations

import json
import random

import pytest

from triptych.apps.cli.main import COMMANDS, main
from triptych.world import render, sample_scene


def test_usage_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 2


def test_unknown_command_is_named(capsys) -> None:
    assert main(["paint"]) == 2
    assert "unknown command 'paint'" in capsys.readouterr().err


def test_serve_has_the_serving_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--preset", "--device", "--dtype", "--host", "--port"))


def test_ask_and_caption_through_the_dispatcher(tmp_path, capsys) -> None:
    scene = sample_scene(random.Random(5), num_objects=2)
    path = tmp_path / "scene.png"
    render(scene).save(path)
    assert main(["ask", str(path), "--question", "how many objects are there?", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["text"] == "two"


def test_classify_through_the_dispatcher(tmp_path, capsys) -> None:
    scene = sample_scene(random.Random(6), num_objects=1)
    path = tmp_path / "scene.png"
    render(scene).save(path)
    obj = scene.objects[0]
    labels = [f"a {obj.color} {obj.shape}", "a tiny house"]
    assert main(["classify", str(path), "--labels", *labels, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] == labels[0]


def test_interpolate_marks_images_with_image(tmp_path, capsys):
    """`triptych interpolate TEXT FILE` used to blend the file name as a prompt and exit 0; images now come with
    --image, and a missing one is named (nothing is loaded before these checks)."""
    out = ["--out", str(tmp_path), "--model", str(tmp_path / "no-model")]
    assert main(["interpolate", "a red circle", "typo.png", *out]) == 2
    assert "'typo.png' looks like an image file name" in capsys.readouterr().err
    assert main(["interpolate", "a red circle", "--image", str(tmp_path / "typo.png"), *out]) == 2
    assert "typo.png: no such file" in capsys.readouterr().err
