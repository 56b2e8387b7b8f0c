"""Attacks: weights folders that try to run their own code, and strings that try to name server files.

Every malicious folder here carries a Python file that creates a sentinel file when imported. The control test
shows the ammunition is live (open_clip itself runs it); every loader and entry point must refuse the folder with a
WeightsError naming the file and the key, and the sentinel must never appear.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import open_clip
import pytest
import torch
from gradio_client import Client

from tests.hf_models import make_kandinsky_decoder_repo, make_kandinsky_prior_repo
from triptych import clip, diffusion, vlm
from triptych.apps.serve.service import Service
from triptych.core.errors import InvalidImageError, WeightsError
from triptych.core.manifest import MANIFEST
from triptych.weights import SHAPES_DIR

EXAMPLE = SHAPES_DIR.parent / "examples" / "scene-1.png"
FAST = dict(seed=3, steps=4, guidance=4.0, prior_steps=3, prior_guidance=4.0)


# ---------------------------------------------------------------- building malicious folders
def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def plant_code(folder: Path, sentinel: Path, module: str = "evil_code") -> str:
    """A module in `folder` that creates `sentinel` when imported; returns the class path an auto_map names."""
    (folder / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('code from a weights folder ran')\n"
        "from transformers import PreTrainedTokenizerFast, PretrainedConfig\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    return f"{module}.EvilTokenizer"


def copy_bundled(part: str, dest: Path) -> Path:
    """A bundled part, editable (its manifest removed, as an attacker would)."""
    shutil.copytree(SHAPES_DIR / part, dest)
    (dest / MANIFEST).unlink()
    return dest


def evil_encoder(dest: Path, sentinel: Path) -> Path:
    """The issue's repro: open_clip forwards tokenizer_kwargs (trust_remote_code) to AutoTokenizer, and the
    tokenizer_config's auto_map points at a .py beside it."""
    folder = copy_bundled("clip", dest)
    target = plant_code(folder, sentinel)

    def trust(c: dict) -> None:
        c["model_cfg"]["text_cfg"]["tokenizer_kwargs"] = {"trust_remote_code": True}

    edit_json(folder / "open_clip_config.json", trust)
    edit_json(folder / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": [target, target]}))
    return folder


@pytest.fixture
def sentinel(tmp_path: Path):
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists(), "code from a weights folder ran"


def test_control_the_planted_code_is_live(tmp_path: Path) -> None:
    """Without our checks, open_clip itself runs the folder's Python: the gallery is real ammunition."""
    sentinel = tmp_path / "SENTINEL"
    folder = evil_encoder(tmp_path / "enc", sentinel)
    open_clip.get_tokenizer(f"local-dir:{folder}")
    assert sentinel.exists()


# ---------------------------------------------------------------- the gallery: one folder per config file and loader
def _encoder_tokenizer_kwargs(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = evil_encoder(tmp / "enc", sentinel)
    return (lambda: clip.load(str(folder), device="cpu")), "trust_remote_code"


def _encoder_auto_map_only(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = copy_bundled("clip", tmp / "enc")
    target = plant_code(folder, sentinel)
    edit_json(folder / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": [target, None]}))
    return (lambda: clip.load(f"local-dir:{folder}", device="cpu")), "auto_map"


def _encoder_foreign_weights(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = copy_bundled("clip", tmp / "enc")

    def overlay(c: dict) -> None:
        c["model_cfg"]["vision_cfg"]["pretrained_cfg_overlay"] = {"file": str(tmp / "weights.pth")}

    edit_json(folder / "open_clip_config.json", overlay)
    return (lambda: clip.load(str(folder), device="cpu")), "pretrained_cfg_overlay"


def _hf_clip_config(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    repo = tmp / "prior-repo"
    make_kandinsky_prior_repo(repo)
    target = plant_code(repo / "text_encoder", sentinel)
    edit_json(repo / "text_encoder" / "config.json", lambda c: c.update(auto_map={"AutoConfig": target}))
    return (lambda: clip.load(str(repo), device="cpu")), "auto_map"


def _kandinsky_tokenizer(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    prior, decoder = tmp / "prior-repo", tmp / "decoder-repo"
    make_kandinsky_prior_repo(prior)
    make_kandinsky_decoder_repo(decoder)
    target = plant_code(prior / "tokenizer", sentinel)
    edit_json(
        prior / "tokenizer" / "tokenizer_config.json",
        lambda c: c.update(auto_map={"AutoTokenizer": [target, None]}, trust_remote_code=True),
    )
    return (lambda: diffusion.load_kandinsky(prior, decoder, device="cpu")), "auto_map"


def _kandinsky_unet(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    prior, decoder = tmp / "prior-repo", tmp / "decoder-repo"
    make_kandinsky_prior_repo(prior)
    make_kandinsky_decoder_repo(decoder)
    plant_code(decoder / "unet", sentinel)
    edit_json(decoder / "unet" / "config.json", lambda c: c.update(custom_pipeline="evil_code"))
    return (lambda: diffusion.load(str(tmp), device="cpu")), "custom_pipeline"


def _vlm_config(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = copy_bundled("vlm", tmp / "vlm")
    target = plant_code(folder, sentinel)
    edit_json(folder / "config.json", lambda c: c.update(auto_map={"AutoModelForCausalLM": target}))
    return (lambda: vlm.load(str(folder), device="cpu")), "auto_map"


def _vlm_names_an_evil_encoder(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    encoder = evil_encoder(tmp / "enc", sentinel)
    folder = copy_bundled("vlm", tmp / "vlm")
    edit_json(folder / "config.json", lambda c: c["vlm"].update(encoder=str(encoder)))
    return (lambda: vlm.load(str(folder), device="cpu")), "trust_remote_code"


def _generator_json(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = copy_bundled("diffusion", tmp / "gen")
    edit_json(folder / "generator.json", lambda c: c.update(trust_remote_code=True))
    return (lambda: diffusion.load(str(folder), device="cpu")), "trust_remote_code"


def _generator_model_index(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = copy_bundled("diffusion", tmp / "gen")
    plant_code(folder, sentinel)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["evil_code", "EvilConfig"]}))
    return (lambda: diffusion.load(str(folder), device="cpu")), "evil_code"


def _generator_names_an_evil_encoder(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    encoder = evil_encoder(tmp / "enc", sentinel)
    folder = copy_bundled("diffusion", tmp / "gen")
    edit_json(folder / "generator.json", lambda c: c.update(encoder=str(encoder)))
    return (lambda: diffusion.load(str(folder), device="cpu")), "trust_remote_code"


def _scheduler_config(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    folder = copy_bundled("diffusion", tmp / "gen")
    edit_json(folder / "scheduler" / "scheduler_config.json", lambda c: c.update(auto_map={"x": "evil_code.X"}))
    return (lambda: diffusion.load(str(folder), device="cpu")), "auto_map"


def _linked_subfolder(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    """A config reached through a linked subfolder is checked like any other."""
    elsewhere = copy_bundled("diffusion", tmp / "elsewhere")
    edit_json(elsewhere / "unet" / "config.json", lambda c: c.update(auto_map={"x": "evil_code.X"}))
    folder = copy_bundled("diffusion", tmp / "gen")
    shutil.rmtree(folder / "unet")
    (folder / "unet").symlink_to(elsewhere / "unet", target_is_directory=True)
    return (lambda: diffusion.load(str(folder), device="cpu")), "auto_map"


def _service_preset_folder(tmp: Path, sentinel: Path) -> tuple[Callable, str]:
    """`triptych serve --preset FOLDER`: the folder's clip/ is the evil encoder."""
    evil_encoder(tmp / "preset" / "clip", sentinel)
    return (lambda: Service.load(str(tmp / "preset"), device="cpu")), "trust_remote_code"


GALLERY = {
    "open_clip tokenizer_kwargs": _encoder_tokenizer_kwargs,
    "tokenizer_config auto_map": _encoder_auto_map_only,
    "open_clip foreign weights": _encoder_foreign_weights,
    "transformers CLIP config": _hf_clip_config,
    "kandinsky tokenizer": _kandinsky_tokenizer,
    "kandinsky unet config": _kandinsky_unet,
    "vlm config": _vlm_config,
    "vlm's encoder": _vlm_names_an_evil_encoder,
    "generator.json": _generator_json,
    "model_index.json library": _generator_model_index,
    "generator's encoder": _generator_names_an_evil_encoder,
    "scheduler config": _scheduler_config,
    "linked subfolder": _linked_subfolder,
    "Service.load preset folder": _service_preset_folder,
}


@pytest.mark.parametrize("case", list(GALLERY))
def test_malicious_folders_are_refused_before_any_code_runs(case: str, tmp_path: Path, sentinel: Path) -> None:
    load, key = GALLERY[case](tmp_path, sentinel)
    with pytest.raises(WeightsError, match=key) as err:
        load()
    assert ".json" in str(err.value)  # names the config file


def test_cli_entry_points_refuse_an_evil_encoder(tmp_path: Path, sentinel: Path, capsys) -> None:
    from triptych.apps.cli import caption, classify

    encoder = evil_encoder(tmp_path / "enc", sentinel)
    assert classify.main([str(EXAMPLE), "--labels", "a", "b", "--model", str(encoder), "--device", "cpu"]) == 2
    assert "trust_remote_code" in capsys.readouterr().err
    folder = copy_bundled("vlm", tmp_path / "vlm")
    edit_json(folder / "config.json", lambda c: c["vlm"].update(encoder=str(encoder)))
    assert caption.main([str(EXAMPLE), "--model", str(folder), "--device", "cpu"]) == 2
    assert "trust_remote_code" in capsys.readouterr().err


def hub_cache(tmp: Path, repo: str, files_from: Path) -> Path:
    """A hub cache holding `repo` at one snapshot (as huggingface_hub lays it out), filled from a folder."""
    cache = tmp / "hub"
    entry = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(files_from, entry / "snapshots" / commit)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    return cache


def test_hub_encoders_are_checked_like_folders(tmp_path: Path, sentinel: Path) -> None:
    """An hf-hub: repository is as untrusted as a folder: its configs are checked, and a repository holding only a
    pickle is refused (open_clip alone would torch.load it)."""
    cache = hub_cache(tmp_path, "evil/clip", evil_encoder(tmp_path / "enc", sentinel))
    with pytest.raises(WeightsError, match="trust_remote_code"):
        clip.load("hf-hub:evil/clip", device="cpu", cache_dir=str(cache))
    pickled = copy_bundled("clip", tmp_path / "pickled")
    (pickled / "open_clip_model.safetensors").unlink()
    torch.save({}, pickled / "open_clip_pytorch_model.bin")
    cache = hub_cache(tmp_path / "second", "someone/pickled", pickled)
    with pytest.raises(WeightsError, match="open_clip_model.safetensors is missing"):
        clip.load("hf-hub:someone/pickled", device="cpu", cache_dir=str(cache))


def test_an_image_file_as_pretrained_tag_must_be_safetensors(tmp_path: Path) -> None:
    """open_clip would torch.load a .bin named by `pretrained`; a user's file never reaches torch.load."""
    pickle = tmp_path / "weights.bin"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(WeightsError, match="safetensors"):
        clip.load("ViT-B-32", pretrained=str(pickle), device="cpu")


def test_manifest_names_stay_inside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "vlm"
    shutil.copytree(SHAPES_DIR / "vlm", folder)
    outside = {"sha256": "0" * 64, "bytes": 1}
    edit_json(folder / MANIFEST, lambda c: c["files"].update({"../../../etc/passwd": outside}))
    with pytest.raises(WeightsError, match="outside"):
        vlm.load(str(folder), device="cpu")


# ---------------------------------------------------------------- strings are text, never server paths
def test_a_str_never_opens_a_file(encoder) -> None:
    for call in (encoder.encode_image, lambda s: encoder.classify(s, ["a", "b"]), clip.load_image):
        with pytest.raises(InvalidImageError, match="pathlib.Path"):
            call(str(EXAMPLE))


def test_interpolate_reads_every_str_as_a_prompt(service) -> None:
    """An existing image path, a missing one and a system file all blend as the same unknown words: no oracle,
    no read. A Path is an image."""
    gen = service.generator
    existing = gen.interpolate([str(EXAMPLE), "a red circle"], [0.5, 0.5], **FAST)
    missing = gen.interpolate([str(EXAMPLE.with_name("scene-9.png")), "a red circle"], [0.5, 0.5], **FAST)
    assert [im.tobytes() for im in existing] == [im.tobytes() for im in missing]
    as_image = gen.interpolate([EXAMPLE, "a red circle"], [0.5, 0.5], **FAST)
    assert [im.tobytes() for im in as_image] != [im.tobytes() for im in existing]
    for call in (gen.variations, lambda s, **kw: gen.img2img(s, "a red circle", **kw)):
        with pytest.raises(InvalidImageError, match="pathlib.Path"):
            call(str(EXAMPLE), **FAST)


def test_captioner_refuses_path_strings(service) -> None:
    for call in (service.captioner.caption, lambda s: service.captioner.ask(s, "how many objects are there?")):
        with pytest.raises(InvalidImageError, match="pathlib.Path"):
            call(str(EXAMPLE))


def interpolate_args(prompt_a: str) -> tuple:
    return (prompt_a, "a red circle", None, 0.5, 0.5, 0.0, 1, 3, 4, 4.0, 3, 4.0, "ddim")


def test_interpolate_endpoint_reads_no_server_files(app_url: str) -> None:
    """The issue's attack over HTTP: a file path in a prompt box is text. Each existing server file (an image,
    /etc/passwd, a 400 MB library) gives exactly the images of a missing path of the same words, so nothing leaks
    a file's existence, size or content."""
    client = Client(app_url, verbose=False)
    huge = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    for existing in (EXAMPLE.resolve(), Path("/etc/passwd"), huge):
        assert existing.is_file()
        missing = existing.with_name(existing.stem + "q" + existing.suffix)  # the same unknown words, no file
        drawn = [client.predict(*interpolate_args(str(p)), api_name="/interpolate") for p in (existing, missing)]
        assert all(len(d) == 1 for d in drawn)
        assert Path(drawn[0][0]["image"]).read_bytes() == Path(drawn[1][0]["image"]).read_bytes(), existing


@pytest.mark.parametrize("endpoint", ["/classify", "/caption", "/ask", "/variations"])
def test_upload_endpoints_refuse_server_paths(app_url: str, endpoint: str) -> None:
    """A raw API call naming a server file instead of uploading one is refused, with the same message whether
    the file exists or not."""
    messages = []
    for path in (EXAMPLE.resolve(), Path("/etc/passwd"), Path("/etc/no-such-file.png")):
        image = {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
        data = {
            "/classify": [image, "a red circle, a blue star", "world"],
            "/caption": [image],
            "/ask": [image, "how many objects are there?"],
            "/variations": [image, 1, 3, 4, 4.0, 3, 4.0, "ddim"],
        }[endpoint]
        messages.append(_raw_call(app_url, endpoint, data))
    assert all(m.startswith("error") for m in messages), messages
    assert len(set(messages)) == 1, messages
    assert "server paths are not read" in messages[0], messages  # our message, not Gradio's bare null
    assert "passwd" not in messages[0] and "scene-1" not in messages[0]


def _raw_call(app_url: str, endpoint: str, data: list) -> str:
    """POST to Gradio's call API and read the event stream: 'error: <message>' or 'complete: <data>'."""
    with httpx.Client(base_url=app_url, timeout=60) as http:
        event = http.post(f"gradio_api/call{endpoint}", json={"data": data}).json()["event_id"]
        text = http.get(f"gradio_api/call{endpoint}/{event}").text
    kind = "error" if "event: error" in text else "complete"
    payload = text.split("data:", 1)[-1].strip() if "data:" in text else ""
    return f"{kind}: {payload}"


def test_client_cannot_fetch_server_files(app_url: str) -> None:
    """Nothing beyond the app's own files is served: the file route refuses paths outside Gradio's cache."""
    with httpx.Client(base_url=app_url, timeout=30) as http:
        for path in ("/etc/passwd", str(EXAMPLE.resolve()), str(Path(__file__).resolve())):
            response = http.get(f"gradio_api/file={path}")
            assert response.status_code in (403, 404), (path, response.status_code)
