"""scripts/gpu_train.sh, the one-shot GPU recipe: its budgets add up, its helper sizes and finalizes training
parts from checkpoints (the VLM's staged recipe too), and its tiny dry run goes through every step on a CPU and
leaves a bundle (encoder, generator, VLM) that loads."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_train.sh"
STEPS = {
    "install",
    "prepare",
    *(f"{part}_{chunk}" for part in ("encoder", "prior", "decoder", "vlm") for chunk in ("first", "rest", "finalize")),
    "eval_clip",
    "cuda_tests",
    "bench_memory",
    "export",
    "eval_diffusion",
    "eval_vlm",
    "bench_classify",
    "bench_vlm",
    "bench_diffusion",
    "pack",
}
# in a tiny run the encoder and prior finish in their first chunk (the decoder and the VLM are sized after
# theirs), nothing needs finalizing, and the memory benchmark (four full app processes) is left out
TINY_SKIPS = {
    "encoder_rest",
    "prior_rest",
    "encoder_finalize",
    "prior_finalize",
    "decoder_finalize",
    "vlm_finalize",
    "bench_memory",
}


def helper():
    spec = importlib.util.spec_from_file_location("gpu_recipes", ROOT / "scripts" / "gpu_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoint(folder: Path, step: int, elapsed: float) -> Path:
    """A checkpoint folder as core/checkpoint.py leaves it (only state.json matters here)."""
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"state": {"step": step, "elapsed_s": elapsed}, "param_groups": []}))
    return folder


@pytest.mark.parametrize("tiny", [False, True])
def test_budgets_add_up(tiny):
    out = subprocess.run(
        ["bash", str(SCRIPT), "--plan", *(["--tiny"] if tiny else [])], capture_output=True, text=True, check=True
    ).stdout
    planned, total = map(int, re.search(r"(\d+) s planned of (\d+) s", out).groups())
    assert planned <= total == (900 if tiny else 540)  # the device run: nine minutes


def test_size_fits_the_budget_and_never_raises_the_steps(tmp_path):
    gpu = helper()
    recipe = tmp_path / "decoder.json"

    def size(ckpt: Path, wall: float, left: float) -> int:
        recipe.write_text(json.dumps({"decoder": {"steps": 1500}}))
        args = ["size", "--recipe", str(recipe), "--stage", "decoder", "--checkpoint", str(ckpt)]
        gpu.main([*args, "--wall", str(wall), "--left", str(left)])
        return json.loads(recipe.read_text())["decoder"]["steps"]

    # 150 steps in 30 s of a 45 s chunk: 0.2 s a step, 15 s of start-up; of 115 s left, 85% of 100 s go to steps
    assert size(checkpoint(tmp_path / "slow", step=150, elapsed=30.0), wall=45, left=115) == 150 + 425
    assert size(checkpoint(tmp_path / "fast", step=150, elapsed=1.5), wall=16.5, left=115) == 1500  # the ceiling
    assert size(checkpoint(tmp_path / "late", step=150, elapsed=30.0), wall=45, left=5) == 150  # what is done


def test_finalize_sets_the_last_checkpoint_step(tmp_path):
    gpu = helper()
    recipe = tmp_path / "clip.json"
    recipe.write_text(json.dumps({"binding": {"steps": 800}}))
    ckpt = tmp_path / "checkpoint"
    checkpoint(ckpt.with_name("checkpoint.previous"), step=300, elapsed=40.0)  # a crash between two renames
    gpu.main(["finalize", "--recipe", str(recipe), "--stage", "binding", "--checkpoint", str(ckpt)])
    assert json.loads(recipe.read_text())["binding"]["steps"] == 300
    with pytest.raises(SystemExit):
        gpu.main(["finalize", "--recipe", str(recipe), "--stage", "binding", "--checkpoint", str(tmp_path / "none")])


def test_size_and_finalize_refit_the_vlm_stages(tmp_path):
    gpu = helper()
    recipe = tmp_path / "vlm.json"
    stages = [{"name": "projector", "steps": 100, "train": ["projector"]}, {"name": "full", "steps": 1100}]
    recipe.write_text(json.dumps({"vlm": {"vision_layer": -1}, "stages": stages}))

    def run(*args: str) -> list[int]:
        gpu.main([*args, "--recipe", str(recipe), "--stage", "vlm"])
        saved = json.loads(recipe.read_text())
        assert saved["vlm"] == {"vision_layer": -1}  # the model's config, not a stage
        return [s["steps"] for s in saved["stages"]]

    # the first chunk was the projector stage: 100 steps in 20 s of a 35 s chunk; 85% of 100 s left -> 425 more
    ckpt = checkpoint(tmp_path / "checkpoint", step=100, elapsed=20.0)
    assert run("size", "--checkpoint", str(ckpt), "--wall", "35", "--left", "115") == [100, 425]
    # cut off at step 300: the export keeps the projector stage and the full stage's 200 steps
    (ckpt / "state.json").write_text(json.dumps({"state": {"step": 300, "elapsed_s": 60.0}}))
    assert run("finalize", "--checkpoint", str(ckpt)) == [100, 200]
    # mid-stage: the stages left share the steps in proportion, the one in progress keeps what it has done
    assert [s["steps"] for s in gpu.fit_stages(stages, 60, 600)] == [60, 540]
    assert [s["steps"] for s in gpu.fit_stages(stages, 10, 600)] == [50, 550]


def test_gpu_recipes_keep_the_models_and_raise_the_batches(tmp_path):
    gpu = helper()
    gpu.main(["recipes", "--mode", "gpu", "--dir", str(tmp_path), "--encoder", str(tmp_path / "clip")])
    cpu = json.loads((ROOT / "weights/recipes/shapes_diffusion_grid.json").read_text())
    prior, decoder = (json.loads((tmp_path / f"{p}.json").read_text()) for p in ("prior", "decoder"))
    # the binding stage trains the image tower too, so the decoder trains on the new encoder, as the prior does
    assert prior["encoder"] == decoder["encoder"] == str(tmp_path / "clip")
    for part in ("prior", "decoder"):
        assert prior[part]["model"] == cpu[part]["model"] and prior[part]["batch_size"] > cpu[part]["batch_size"]
    assert decoder["decoder"]["grid_channels"] == cpu["decoder"]["grid_channels"]
    binding = json.loads((tmp_path / "clip.json").read_text())["binding"]
    assert "visual" not in binding.get("freeze", ()) and binding["batch_size"] == 256
    # the VLM reads the encoder's patch tokens: retrained on the new encoder, same model, larger batch
    cpu_vlm = json.loads((ROOT / "weights/recipes/shapes_vlm.json").read_text())
    vlm = json.loads((tmp_path / "vlm.json").read_text())
    assert vlm["encoder"] == str(tmp_path / "clip") and vlm["decoder"] == cpu_vlm["decoder"]
    assert vlm["batch_size"] > cpu_vlm["batch_size"]
    assert [(s["name"], s["train"]) for s in vlm["stages"]] == [(s["name"], s["train"]) for s in cpu_vlm["stages"]]


def test_slim_wheel_drops_the_front_end_and_its_record_lines(tmp_path):
    wheel = tmp_path / "gradio-9.9.9-py3-none-any.whl"
    files = ["gradio/__init__.py", "gradio/templates/frontend/index.html", "gradio/media_assets/a.png"]
    with zipfile.ZipFile(wheel, "w") as z:
        for name in files:
            z.writestr(name, "x")
        z.writestr("gradio-9.9.9.dist-info/RECORD", "".join(f"{name},sha256=x,1\n" for name in files))
    helper().main(["slim-wheel", str(wheel)])
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == ["gradio-9.9.9.dist-info/RECORD", "gradio/__init__.py"]
        assert z.read("gradio-9.9.9.dist-info/RECORD").decode() == "gradio/__init__.py,sha256=x,1\n"


@pytest.mark.slow
def test_tiny_dry_run_leaves_a_loadable_bundle_and_a_full_summary(tmp_path):
    out, pack = tmp_path / "out", tmp_path / "pack"
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(SCRIPT), "--tiny", "--out", str(out), "--pack", str(pack)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["step"]: row for row in summary["steps"]}
    assert set(rows) == STEPS and len(summary["steps"]) == len(STEPS)
    assert {name for name, row in rows.items() if row["status"] == "skipped"} == TINY_SKIPS
    for name in STEPS - TINY_SKIPS:
        assert rows[name]["rc"] == 0 and rows[name]["status"] == "ok", rows[name]
        assert (out / "logs" / f"{name}.log").is_file()
    assert summary["failed"] == [] and summary["trained"]["decoder"]["steps"] == 4
    assert summary["trained"]["vlm"]["steps"] == 4  # projector 2 (the first chunk) + full 2 (the sized rest)
    summary_md = (out / "summary.md").read_text()
    assert all(f"| {name} |" in summary_md for name in STEPS)

    from triptych import clip, diffusion, vlm
    from triptych.world import render, sample_scene

    encoder = clip.load(str(out / "bundle" / "clip"), device="cpu")
    assert encoder.encode_text(["a red circle"]).shape == (1, encoder.embed_dim)
    generator = diffusion.load(str(out / "bundle" / "diffusion"), device="cpu")
    assert len(generator.generate("a red circle", steps=2, prior_steps=2, progress=False)) == 1
    # the VLM was retrained on the new encoder (its config names it) and loads onto it
    config = json.loads((out / "bundle" / "vlm" / "config.json").read_text())
    assert Path(config["vlm"]["encoder"]).resolve() == (out / "bundle" / "clip").resolve()
    captioner = vlm.load(str(out / "bundle" / "vlm"), encoder=encoder)
    assert len(captioner.caption([render(sample_scene(random.Random(0)))])) == 1
    for name in ("clip.json", "diffusion.json", "vlm.json"):
        assert json.loads((out / "eval" / name).read_text())["scores"]["in_distribution"]
    assert all((out / "bench" / f"{name}.md").read_text().startswith("|") for name in ("classify", "vlm", "diffusion"))
    assert rows["bench_vlm"]["note"] == "the new VLM" and rows["bench_diffusion"]["note"] == "the new generator"

    # what the device tool brings back: at most 8 files of at most 16 MiB, plain names
    packed = sorted(pack.iterdir())
    assert [p.name for p in packed] == [
        "bundle-clip.tar.gz",
        "bundle-diffusion.tar.gz",
        "bundle-vlm.tar.gz",
        "reports.tar.gz",
        "summary.json",
        "summary.md",
    ]
    assert all(p.stat().st_size <= 16 * 2**20 and re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in packed)
