"""Reading untrusted weights folders: every JSON config is checked before any library sees it, and every failure
(broken JSON, a missing or mistyped key, a corrupt or pickled "safetensors" file) becomes one WeightsError that
names the file and the key.

Weights folders come from users and from the hub, so nothing in them may choose code to run. transformers runs a
folder's own Python when a config says `auto_map` and a caller passes `trust_remote_code` (open_clip forwards
`text_cfg.tokenizer_kwargs` from its config to `AutoTokenizer`); diffusers imports the modules a
`model_index.json` names. `check_folder` refuses all of these before a loader starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import WeightsError

# Keys that make transformers, diffusers or open_clip import code named by the folder.
CODE_KEYS = frozenset({"auto_map", "trust_remote_code", "custom_pipeline", "custom_pipelines", "_custom_pipeline"})
# Pure vocabularies, read by the Rust tokenizers library: their keys are tokens, and a token may be any word.
VOCABULARY_FILES = frozenset({"tokenizer.json", "vocab.json"})
# A model_index.json may name components only from these libraries (diffusers imports whatever module is named).
PIPELINE_LIBRARIES = frozenset({"diffusers", "transformers"})
# open_clip keys that pull weights from elsewhere (timm / transformers may read pickles); a folder carries its own.
OPEN_CLIP_FOREIGN_WEIGHTS = frozenset({"timm_model_pretrained", "hf_model_pretrained", "pretrained_cfg_overlay"})
MAX_CONFIG_BYTES = 64 * 1024 * 1024
_MISSING = object()


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path`, checked for keys that name code; WeightsError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} is missing")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise WeightsError(f"{path} is {path.stat().st_size} bytes: too large for a config file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise WeightsError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise WeightsError(f"{path} must hold a JSON object, not {type(data).__name__}")
    if path.name not in VOCABULARY_FILES:
        check_config(data, path)
    return data


def check_config(data: dict[str, Any], path: Path) -> None:
    """Refuse a parsed config that would make a library import or fetch code (see the module docstring)."""
    for where, key, value in _walk(data):
        if key in CODE_KEYS and not (key == "trust_remote_code" and value is False):
            raise WeightsError(f"{path}: key {where!r} names code to run; weights folders may not carry code")
    if path.name == "model_index.json":
        for key, value in data.items():
            if isinstance(value, list) and value and value[0] not in PIPELINE_LIBRARIES | {None}:
                raise WeightsError(
                    f"{path}: component {key!r} comes from library {value[0]!r}; only "
                    f"{sorted(PIPELINE_LIBRARIES)} are loaded"
                )
    if path.name == "open_clip_config.json":
        for where, key, value in _walk(data):
            if key in OPEN_CLIP_FOREIGN_WEIGHTS and value not in (False, None):
                raise WeightsError(
                    f"{path}: key {where!r} asks for weights from outside the folder; the folder's safetensors "
                    f"must hold them all"
                )


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, key, value) of every key in nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            yield where, str(key), value
            yield from _walk(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{prefix}[{i}]")


def check_folder(folder: str | Path) -> None:
    """Check every JSON file in a weights folder, subfolders included, before any library reads the folder.
    Linked subfolders are followed, as the libraries would follow them (each real folder is read once)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"weights folder not found: {folder}")
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree: already checked
            dirs.clear()
            continue
        seen.add(real)
        for name in sorted(files):
            if name.endswith(".json") and (Path(root) / name).is_file():
                read_json(Path(root) / name)


def config_value(
    config: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path, default: Any = _MISSING
) -> Any:
    """config[key], checked to be of `kind` (bool is never an int here, NaN never a float); WeightsError naming
    file and key otherwise."""
    if key not in config:
        if default is _MISSING:
            raise WeightsError(f"{path}: key {key!r} is missing")
        return default
    value = config[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    if not wrong and isinstance(value, float) and not math.isfinite(value):
        wrong = True
    if wrong:
        names = " or ".join(k.__name__ for k in kinds)
        raise WeightsError(f"{path}: key {key!r} must be {names}, got {value!r}")
    return value


def positive_int(config: dict[str, Any], key: str, path: Path, default: Any = _MISSING) -> int:
    """A whole number >= 1 from a config (sizes, widths, counts)."""
    value = config_value(config, key, int, path, default)
    if value < 1:
        raise WeightsError(f"{path}: key {key!r} must be at least 1, got {value!r}")
    return value


def check_fields(config: Any) -> None:
    """Each field of a config dataclass holds its annotated type (int, float, bool, str, dict, list, a dataclass,
    or `X | None`): ValueError naming the field otherwise, which loaders report as a WeightsError for their file.
    A float field takes an int; no field takes a bool it does not name, or NaN."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value, hint = getattr(config, item.name), hints[item.name]
        allowed = tuple(typing.get_origin(k) or k for k in typing.get_args(hint)) if _is_union(hint) else (hint,)
        allowed = tuple(typing.get_origin(k) or k for k in allowed)
        if float in allowed:
            allowed += (int,)
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
            raise ValueError(f"{item.name} must be {names}, got {value!r}")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in a safetensors file; a pickle under that name or a corrupt header is a WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({err})") from err


def read_safetensors(folder: str | Path, stem: str = "model") -> dict[str, torch.Tensor]:
    """Every tensor of `<stem>.safetensors` or its shards `<stem>-*.safetensors` (pickles are never read)."""
    files = sorted(Path(folder).glob(f"{stem}*.safetensors"))
    if not files:
        raise WeightsError(f"no {stem}*.safetensors in {folder} (pickled checkpoints are not loaded)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_safetensors(f))
    return state


@contextlib.contextmanager
def weights_errors(where: str | Path) -> Iterator[None]:
    """Turn what a library raises on a malformed folder (a missing key, a wrong type, a zero width, a corrupt
    file) into one WeightsError that starts with `where` (the folder, or what was being loaded) and names the
    key."""
    try:
        yield
    except (WeightsError, torch.OutOfMemoryError):
        raise
    except KeyError as err:
        raise WeightsError(f"{where}: key {err} is missing from its config") from err
    except (SafetensorError, TypeError, ValueError, ZeroDivisionError, AttributeError, OSError, RuntimeError) as err:
        raise WeightsError(f"{where}: {type(err).__name__}: {err}") from err
