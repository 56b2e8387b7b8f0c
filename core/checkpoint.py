"""Crash-safe training outputs in safetensors + JSON only (never pickle): checkpoints (model, optimizer state, step),
and the folder switch the trainers' exports share.

Every such folder is written whole into a temp sibling (`<name>.partial`) and switched into place by one rename;
the folder it replaces waits as `<name>.previous` until the switch and is removed after it. A crash at any point
leaves the old folder or the new one complete, never a mix: `current_folder` finds it (the `.previous` one when
the crash fell between the two renames), and leftover `.partial` folders are never read and are cleared by the
next save.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import WeightsError
from .manifest import MANIFEST, write_manifest
from .weights_files import load_safetensors

PARTIAL, PREVIOUS = ".partial", ".previous"
MODEL, OPTIMIZER, STATE = "model.safetensors", "optimizer.safetensors", "state.json"


# ---------------------------------------------------------------------- folders switched in one rename
def _sibling(folder: Path, tag: str) -> Path:
    return folder.with_name(folder.name + tag)


def _fsync(path: Path) -> None:
    """Flush a file (or, where the OS allows, a folder's entries) to disk, so a rename never lands before data."""
    flags = os.O_RDONLY
    if path.is_dir():
        if not hasattr(os, "O_DIRECTORY"):  # Windows: folders cannot be flushed
            return
        flags |= os.O_DIRECTORY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_folder(folder: Path) -> Path | None:
    """The complete version of a folder written by `replace_folder`: the folder itself, else the previous one a
    crash between the two renames left (`<name>.previous`), else None. A `.partial` folder is never returned."""
    folder = Path(folder)
    return next((f for f in (folder, _sibling(folder, PREVIOUS)) if f.is_dir()), None)


@contextmanager
def replace_folder(folder: Path) -> Iterator[Path]:
    """Yield an empty temp sibling to fill; when the block ends normally it replaces `folder` in one rename (the
    old folder kept as `<name>.previous` until then). An exception removes the temp folder and keeps the old one;
    a crash leaves the temp folder behind, where the next call clears it."""
    folder = Path(folder)
    partial, previous = _sibling(folder, PARTIAL), _sibling(folder, PREVIOUS)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except Exception:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for path in (*sorted(partial.rglob("*")), partial):
        _fsync(path)
    if folder.is_dir():  # else a crash between the renames left only `previous`: it stays until the switch
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(folder, previous)
    os.rename(partial, folder)  # the switch
    _fsync(folder.parent)
    shutil.rmtree(previous, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temp file and one rename: readers see the old content or the new, never half."""
    tmp = _sibling(path, PARTIAL)
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> None:
    """model.safetensors, optimizer.safetensors (+ groups in state.json), any extra models (e.g. EMA), switched
    in together: a crash keeps the previous checkpoint whole."""
    opt = optimizer.state_dict()
    flat = {
        f"{idx}.{key}": (val if torch.is_tensor(val) else torch.tensor(val))
        for idx, per_param in opt["state"].items()
        for key, val in per_param.items()
    }
    with replace_folder(folder) as tmp:
        _save_tensors(model.state_dict(), tmp / MODEL)
        for name, extra in (extra_models or {}).items():
            _save_tensors(extra.state_dict(), tmp / f"{name}.safetensors")
        _save_tensors(flat, tmp / OPTIMIZER)
        (tmp / STATE).write_text(json.dumps({"state": state, "param_groups": opt["param_groups"]}, indent=1))


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().clone() for k, v in tensors.items()}, str(path))  # clone: tied weights


def has_checkpoint(folder: Path) -> bool:
    """Whether a complete checkpoint exists to resume from (see `current_folder`)."""
    return current_folder(folder) is not None


def _checkpoint(folder: Path, names: list[str]) -> Path:
    """The current checkpoint folder, checked to hold every file in `names` (WeightsError naming the first
    missing one) before anything is read."""
    found = current_folder(folder)
    if found is None:
        raise WeightsError(f"no checkpoint in {folder}")
    for name in names:
        if not (found / name).is_file():
            raise WeightsError(f"{found / name} is missing: the checkpoint is incomplete (start over without resuming)")
    return found


def _read_meta(found: Path) -> dict:
    path = found / STATE
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise WeightsError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or not {"state", "param_groups"} <= meta.keys():
        raise WeightsError(f"{path} must hold an object with keys 'state' and 'param_groups'")
    return meta


def read_checkpoint_state(folder: Path) -> dict:
    """The `state` dict the current checkpoint was saved with (step, ...), without loading any tensors."""
    return _read_meta(_checkpoint(folder, [STATE]))["state"]


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """Restore what save_checkpoint wrote (the optimizer's state only when one is given); returns the saved
    `state` dict. Every file is checked to exist before anything is loaded."""
    extras = {f"{name}.safetensors": extra for name, extra in (extra_models or {}).items()}
    found = _checkpoint(folder, [STATE, MODEL, *extras, *([OPTIMIZER] if optimizer else [])])
    meta = _read_meta(found)
    model.load_state_dict(load_safetensors(found / MODEL))
    for name, extra in extras.items():
        extra.load_state_dict(load_safetensors(found / name))
    if optimizer is not None:
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, val in load_safetensors(found / OPTIMIZER).items():
            idx, name = key.split(".", 1)
            per_param.setdefault(int(idx), {})[name] = val
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    return meta["state"]


# ---------------------------------------------------------------------- reading weights and records
def training_record(recipe: dict, state: dict, device: torch.device | str, **extra) -> dict:
    """What a finished run writes to training.json: recipe, steps, wall time, device, final loss, versions."""
    return {
        "recipe": recipe,
        "steps": state["step"],
        "train_seconds": round(state["elapsed_s"], 1),
        "device": str(device),
        "final_loss": state.get("loss"),
        "torch": torch.__version__,
        **extra,
    }


# ---------------------------------------------------------------------- the exported folder
@contextmanager
def export_folder(out: Path) -> Iterator[Path]:
    """A weights folder written whole: fill the yielded temp folder; files of the existing `out` it lacks (a
    model card, a sample grid) are kept, never its folders (an old model part the new export does not have), the
    sha256 manifest is written last, and the folder replaces `out` in one switch, so a crash leaves the old export
    or the new one, each matching its manifest."""
    with replace_folder(out) as tmp:
        yield tmp
        old = current_folder(out)
        for entry in sorted(old.iterdir()) if old else ():
            target = tmp / entry.name
            if entry.name == MANIFEST or target.exists() or entry.is_dir():
                continue
            shutil.copy2(entry, target)
        write_manifest(tmp)
