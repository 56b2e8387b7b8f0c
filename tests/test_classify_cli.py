"""The zero-shot classification script: tables, JSON, CSV, folders with bad files, one-line errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from apps.classify import main
from tests.tiny_models import make_tiny_encoder_dir

EXAMPLES = "weights/examples"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return "local-dir:" + str(make_tiny_encoder_dir(tmp_path_factory.mktemp("cli")))


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([*args, "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_json_and_csv(capsys, model):
    code, out, _ = run(capsys, f"{EXAMPLES}/scene-1.png", "--labels", "a red circle", "a blue star", "--model", model)
    assert code == 0 and "scene-1.png" in out and "a red circle" in out and " 1. " in out
    code, out, _ = run(
        capsys,
        f"{EXAMPLES}/scene-1.png",
        f"{EXAMPLES}/scene-2.png",
        "--labels-file",
        f"{EXAMPLES}/objects.txt",
        "--top-k",
        "3",
        "--format",
        "json",
        "--model",
        model,
        "--templates",
        "world",
    )
    rows = json.loads(out)
    assert code == 0 and [r["image"].rsplit("/", 1)[-1] for r in rows] == ["scene-1.png", "scene-2.png"]
    assert all(len(r["top"]) == 3 for r in rows)
    assert all(r["top"][0]["prob"] >= r["top"][1]["prob"] >= r["top"][2]["prob"] for r in rows)
    code, out, _ = run(capsys, EXAMPLES, "--labels", "a", "b", "--format", "csv", "--model", model)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 4 * 2 and {r["rank"] for r in table} == {"1", "2"}


def test_folder_continues_past_bad_files(capsys, model, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("scene-1.png", "scene-2.png"):
        shutil.copy(f"{EXAMPLES}/{name}", folder / name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "readme.txt").write_text("not an image, and not picked up")
    code, out, err = run(
        capsys, str(folder), "--labels", "a red circle", "a blue star", "--format", "json", "--model", model
    )
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert code == 1
    assert set(rows) == {"scene-1.png", "scene-2.png", "empty.png", "broken.jpg"}
    assert "empty" in rows["empty.png"]["error"] and "top" in rows["scene-2.png"]
    assert "skipped" in err and "empty.png" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "a", "a"], "appears twice"),
        (["--labels", "a", " "], "empty"),
        (["--labels-file", "/no/such/file"], "cannot read labels file"),
        (["--labels", "a", "--top-k", "0"], "--top-k"),
        (["--labels", "a", "--templates", "no braces"], "exactly one"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, model, args, message):
    code, _, err = run(capsys, f"{EXAMPLES}/scene-1.png", *args, "--model", model)
    assert code == 2 and message in err and err.count("\n") == 1


def test_missing_labels_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([f"{EXAMPLES}/scene-1.png", "--labels"])
    assert exit_info.value.code == 2


def test_all_bad_inputs_exit_2(capsys, model, tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    code, _, err = run(capsys, str(tmp_path / "zero.png"), "--labels", "a", "--model", model)
    assert code == 2 and "empty" in err
    code, _, err = run(capsys, str(tmp_path / "nothing-here"), "--labels", "a", "--model", model)
    assert code == 2 and "no such file" in err
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    code, _, err = run(capsys, str(empty_dir), "--labels", "a", "--model", model)
    assert code == 2 and "no image files" in err


def test_console_script_runs_on_the_bundled_encoder():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = os.path.join(os.path.dirname(sys.executable), "triptych-classify")
    result = subprocess.run(
        [
            script,
            f"{EXAMPLES}/scene-1.png",
            "--labels-file",
            f"{EXAMPLES}/objects.txt",
            "--top-k",
            "1",
            "--format",
            "json",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["label"] == "a red circle"
