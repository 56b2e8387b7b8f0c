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

from tests.tiny_models import make_tiny_encoder_dir
from triptych.apps.cli.classify import main

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


def test_folder_reports_links_fifos_and_folders_named_like_images(capsys, model, tmp_path):
    """Entries with an image name that are not regular files used to be skipped without a word."""
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(f"{EXAMPLES}/scene-1.png", folder / "scene-1.png")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(folder / "pipe.png")
    (folder / "album.png").mkdir()
    shutil.copy(f"{EXAMPLES}/scene-2.png", folder / "album.png" / "inner.png")
    code, out, err = run(capsys, str(folder), "--labels", "a", "b", "--format", "json", "--model", model)
    rows = {r["image"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert code == 1 and set(rows) == {"scene-1.png", "gone.png", "pipe.png", "album.png"}
    assert "broken symbolic link" in rows["gone.png"]["error"]
    assert "not a regular file" in rows["pipe.png"]["error"]
    assert "is a folder" in rows["album.png"]["error"]
    assert all(name in err for name in ("gone.png", "pipe.png", "album.png"))
    code, out, _ = run(capsys, str(folder), "--recursive", "--labels", "a", "b", "--format", "json", "--model", model)
    names = [r["image"].rsplit("/", 1)[-1] for r in json.loads(out)]  # --recursive: album.png is descended into
    assert code == 1 and "inner.png" in names and "album.png" not in names


def test_undecodable_file_names_are_printed_escaped(capsys, model, tmp_path):
    """A file name that is not UTF-8 (Python keeps its bytes as lone surrogates) is printed with \\x escapes instead
    of failing the print after all the work."""
    name = os.fsdecode(b"scene-\xff.png")
    shutil.copy(f"{EXAMPLES}/scene-1.png", tmp_path / name)
    for fmt in ("table", "csv", "json"):
        code, out, _ = run(capsys, str(tmp_path), "--labels", "a", "b", "--format", fmt, "--model", model)
        assert code == 0 and "scene-\\xff.png" in (json.loads(out)[0]["image"] if fmt == "json" else out)


def test_corrupt_model_folder_is_one_line(capsys, model, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(model.removeprefix("local-dir:"), folder)
    weights = folder / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    code, _, err = run(capsys, f"{EXAMPLES}/scene-1.png", "--labels", "a", "b", "--model", f"local-dir:{folder}")
    assert code == 2 and err.count("\n") == 1 and "error:" in err and str(folder) in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "a", "a"], "appears twice"),
        (["--labels", "a", " "], "empty"),
        (["--labels-file", "/no/such/file"], "cannot read labels file"),
        (["--labels", "a", "--top-k", "0"], "--top-k"),
        (["--labels", "a", "--templates", "no braces"], "exactly one"),
        (["--labels", "a", "--templates", "{x} {}"], "exactly one"),
        (["--labels", "a", "--templates", "{} {0}"], "exactly one"),
        (["--labels", "a", "--templates", "{} {"], "not a valid format string"),
        (["--labels", "a", "b", "--templates", "a {}", "{!r}"], "exactly one"),
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
