"""Presets of real weights without a hub: the registry, offline errors that name what is missing, and preset
folders laid out as the hub lays them out, loaded and served by the app with no network."""

from __future__ import annotations

import shutil
import socket

import pytest
from gradio_client import Client, handle_file

from tests.hf_models import make_kandinsky_decoder_repo, make_kandinsky_prior_repo
from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip, diffusion
from triptych.apps.cli.main import main as triptych
from triptych.apps.serve.app import build_app, launch
from triptych.apps.serve.service import Service
from triptych.core import presets
from triptych.core.resolve import resolve
from triptych.world import render, sample_scene


@pytest.fixture(scope="module")
def kandinsky_folder(tmp_path_factory):
    """`triptych download kandinsky-2.2 --to DIR` as it would lay the two repositories out, with tiny weights."""
    root = tmp_path_factory.mktemp("preset") / "k22"
    make_kandinsky_prior_repo(root / "kandinsky-2-2-prior")
    make_kandinsky_decoder_repo(root / "kandinsky-2-2-decoder")
    return root


def test_registry_names_sources_sizes_and_purposes(capsys):
    assert {"clip-vit-b-32", "siglip-vit-b-16", "llava-smollm2-135m", "kandinsky-2.2"} <= set(presets.PRESETS)
    for preset in presets.PRESETS.values():
        assert preset.repos and preset.purpose and preset.fp16_gib > 0
        assert all(repo.role in presets.REQUIRED and "/" in repo.repo_id for repo in preset.repos)
    assert 8 < presets.get("kandinsky-2.2").fp16_gib < 10  # 4.8 B parameters in fp16
    assert triptych(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{name}`" in out for name in presets.PRESETS) and "GiB" in out
    with pytest.raises(clip.WeightsError, match="unknown preset 'nope'"):
        presets.get("nope")


def test_offline_fetch_names_the_missing_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(clip.WeightsError, match="kandinsky-community/kandinsky-2-2-prior.*not in the hub cache"):
        presets.fetch("kandinsky-2.2", cache_dir=tmp_path)
    with pytest.raises(clip.WeightsError, match="laion/CLIP-ViT-B-32"):
        clip.load("clip-vit-b-32", device="cpu")
    with pytest.raises(clip.WeightsError, match="not in the hub cache"):
        diffusion.load("kandinsky-2.2", device="cpu")
    assert triptych(["download", "siglip-vit-b-16", "--cache-dir", str(tmp_path)]) == 1
    assert "timm/ViT-B-16-SigLIP" in capsys.readouterr().err


def test_local_preset_folder_resolves_and_names_a_missing_file(kandinsky_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parts = resolve(str(kandinsky_folder))
    assert parts.encoder == str(parts.generator) == str(kandinsky_folder / "kandinsky-2-2-prior")
    assert parts.decoder == kandinsky_folder / "kandinsky-2-2-decoder" and parts.vlm is None
    folders = presets.fetch("kandinsky-2.2", to=kandinsky_folder)  # offline: the folder is used as it is
    assert folders["prior"] == kandinsky_folder / "kandinsky-2-2-prior"
    broken = tmp_path / "broken"
    shutil.copytree(kandinsky_folder, broken)
    for weights in (broken / "kandinsky-2-2-decoder" / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(clip.WeightsError, match=r"unet/diffusion_pytorch_model\*\.safetensors"):
        resolve(str(broken))
    with pytest.raises(clip.WeightsError, match="open_clip_config.json"):  # a decoder repository alone: no encoder
        Service.load(str(tmp_path / "broken" / "kandinsky-2-2-decoder"), device="cpu")


def test_encoder_only_preset_folder_serves_classification(tmp_path):
    root = tmp_path / "vit"
    shutil.copytree(make_tiny_encoder_dir(tmp_path / "enc"), root / presets.VIT_B_32.folder_name)
    service = Service.load(str(root), device="cpu")
    assert service.captioner is None and service.generator is None
    probs = service.encoder.classify(render(sample_scene(0)), ["a red circle", "a blue square"])
    assert probs.shape == (1, 2)


def test_kandinsky_preset_folder_runs_in_the_app_offline(kandinsky_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    service = Service.load(str(kandinsky_folder), device="cpu")
    assert service.captioner is None
    assert service.generator.encoder is service.encoder  # the prior repository's CLIP, loaded once
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(service)
    launch(app, port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert "/generate" in endpoints and "/caption" not in endpoints
        scene = render(sample_scene(2))
        path = kandinsky_folder.parent / "scene.png"
        scene.save(path)
        label = client.predict(handle_file(str(path)), "a red circle, a blue square", "none", api_name="/classify")
        assert {c["label"] for c in label["confidences"]} == {"a red circle", "a blue square"}
        # prompt, negative, images, best-of, seed, steps, guidance, prior steps, prior guidance, scheduler
        gallery = client.predict("a red circle", "", 1, 1, 1, 3, 4.0, 3, 4.0, "ddpm", api_name="/generate")
        assert len(gallery) == 1
        assert f"`{kandinsky_folder.name}`" in service.about() and str(kandinsky_folder) not in service.about()
    finally:
        app.close()
