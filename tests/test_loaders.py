"""Malformed weights folders: every loader answers with one WeightsError naming the file and the key (never a
KeyError, TypeError, ZeroDivisionError, JSONDecodeError or SafetensorError), and refuses at load what would only
fail later."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hf_models import make_kandinsky_prior_repo
from triptych import clip, diffusion, vlm
from triptych.core.errors import WeightsError
from triptych.core.manifest import MANIFEST
from triptych.weights import SHAPES_DIR


def copy_bundled(part: str, dest: Path, keep_manifest: bool = False) -> Path:
    shutil.copytree(SHAPES_DIR / part, dest)
    if not keep_manifest:
        (dest / MANIFEST).unlink()
    return dest


def set_key(path: Path, keys: str, value: object) -> None:
    """Set a dotted key ("model_cfg.text_cfg.heads") in a JSON file; `...` as value deletes it."""
    data = json.loads(path.read_text())
    *parents, last = keys.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    path.write_text(json.dumps(data))


def pickle_as_safetensors(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


LOADERS: dict[str, Callable[[Path], object]] = {
    "clip": lambda folder: clip.load(str(folder), device="cpu"),
    "vlm": lambda folder: vlm.load(str(folder), encoder=clip.load("shapes", device="cpu")),
    "diffusion": lambda folder: diffusion.load(str(folder), encoder=clip.load("shapes", device="cpu")),
}

# (part, file, how it is broken, what the error must name)
CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("clip", "open_clip_config.json", lambda p: p.write_text("{not json"), "not valid JSON"),
    ("clip", "open_clip_config.json", lambda p: p.write_text("[1, 2]"), "JSON object"),
    ("clip", "open_clip_config.json", lambda p: set_key(p, "model_cfg", ...), "'model_cfg' is missing"),
    ("clip", "open_clip_config.json", lambda p: set_key(p, "model_cfg.embed_dim", "128"), "'embed_dim'"),
    ("clip", "open_clip_config.json", lambda p: set_key(p, "model_cfg.text_cfg.heads", 0), "could not load encoder"),
    ("clip", "open_clip_config.json", lambda p: set_key(p, "model_cfg.text_cfg.layers", "3"), "could not load"),
    ("clip", "open_clip_config.json", lambda p: set_key(p, "model_cfg.vision_cfg", ...), "'vision_cfg'"),
    ("clip", "open_clip_model.safetensors", pickle_as_safetensors, "could not load encoder"),
    ("clip", "open_clip_model.safetensors", truncate, "could not load encoder"),
    ("vlm", "config.json", lambda p: p.write_text('{"vlm": '), "not valid JSON"),
    ("vlm", "config.json", lambda p: set_key(p, "vlm.vision_width", ...), "vision_width"),
    ("vlm", "config.json", lambda p: set_key(p, "hidden_size", "256"), "hidden_size"),
    ("vlm", "config.json", lambda p: set_key(p, "num_key_value_heads", 0), "num_key_value_heads"),
    ("vlm", "config.json", lambda p: set_key(p, "rms_norm_eps", None), "rms_norm_eps"),
    ("vlm", "config.json", lambda p: set_key(p, "vlm.surprise", 1), "surprise"),
    ("vlm", "config.json", lambda p: set_key(p, "vlm", [1]), "'vlm' must be dict"),
    ("vlm", "config.json", lambda p: set_key(p, "vlm.special_tokens", {"bos": 5}), "special_tokens"),
    ("vlm", "config.json", lambda p: set_key(p, "vlm.special_tokens", {"foo": "x"}), "special_tokens"),
    ("vlm", "model.safetensors", pickle_as_safetensors, "model.safetensors"),
    ("vlm", "model.safetensors", truncate, "model.safetensors"),
    ("vlm", "tokenizer.json", lambda p: p.write_text('{"model": 5}'), "tokenizer.json"),
    ("diffusion", "generator.json", lambda p: set_key(p, "image_size", "64"), "'image_size' must be int"),
    ("diffusion", "generator.json", lambda p: set_key(p, "image_size", 0), "'image_size' must be at least 1"),
    ("diffusion", "generator.json", lambda p: set_key(p, "encoder", ...), "'encoder' is missing"),
    ("diffusion", "generator.json", lambda p: set_key(p, "prior_normalize_text", "yes"), "prior_normalize_text"),
    ("diffusion", "generator.json", lambda p: set_key(p, "defaults.steps", -1), "defaults"),
    ("diffusion", "generator.json", lambda p: p.write_text(""), "not valid JSON"),
    ("diffusion", "unet/config.json", lambda p: p.write_text("{"), "unet/config.json"),
    ("diffusion", "unet/diffusion_pytorch_model.safetensors", truncate, "cannot load the generator"),
    ("diffusion", "movq/diffusion_pytorch_model.safetensors", pickle_as_safetensors, "cannot load the generator"),
    ("diffusion", "prior/config.json", lambda p: set_key(p, "num_layers", "two"), "cannot load the generator"),
]


@pytest.mark.parametrize(
    ("part", "file", "breakage", "named"), CASES, ids=[f"{c[0]}:{c[1]}:{i}" for i, c in enumerate(CASES)]
)
def test_a_malformed_file_is_a_weights_error_naming_it(tmp_path, part, file, breakage, named) -> None:
    folder = copy_bundled(part, tmp_path / part)
    breakage(folder / file)
    with pytest.raises(WeightsError, match=named.replace("(", r"\(")) as err:
        LOADERS[part](folder)
    assert str(folder) in str(err.value) or file.split("/")[-1] in str(err.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m.update(files=[1]), "'files' must be dict"),
        (lambda m: m.pop("files"), "'files' is missing"),
        (lambda m: m["files"]["config.json"].pop("sha256"), "'sha256' is missing"),
        (lambda m: m["files"]["config.json"].update(bytes="many"), "'bytes' must be int"),
        (lambda m: m["files"].update({"config.json": "abc"}), "files.config.json"),
    ],
)
def test_a_malformed_manifest_is_a_weights_error(tmp_path, change, named) -> None:
    folder = copy_bundled("vlm", tmp_path / "vlm", keep_manifest=True)
    data = json.loads((folder / MANIFEST).read_text())
    change(data)
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=named) as err:
        LOADERS["vlm"](folder)
    assert MANIFEST in str(err.value)


@pytest.mark.parametrize(("key", "value"), [("vocab_size", ...), ("hidden_size", "wide"), ("num_attention_heads", 0)])
def test_a_malformed_transformers_clip_is_a_weights_error(tmp_path, key, value) -> None:
    make_kandinsky_prior_repo(tmp_path / "prior")
    set_key(tmp_path / "prior" / "text_encoder" / "config.json", key, value)
    with pytest.raises(WeightsError, match=str(tmp_path / "prior")):
        clip.load(str(tmp_path / "prior"), device="cpu")
