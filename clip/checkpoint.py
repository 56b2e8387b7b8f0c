"""Training checkpoints in safetensors + JSON only (model, optimizer state, step), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import WeightsError


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().clone() for k, v in tensors.items()}, str(tmp))  # clone: tied weights
    os.replace(tmp, path)


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> None:
    """model.safetensors, optimizer.safetensors (+ groups in state.json), any extra models (e.g. EMA)."""
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(model.state_dict(), folder / "model.safetensors")
    for name, extra in (extra_models or {}).items():
        _atomic_save(extra.state_dict(), folder / f"{name}.safetensors")
    opt = optimizer.state_dict()
    flat = {
        f"{idx}.{key}": (val if torch.is_tensor(val) else torch.tensor(val))
        for idx, per_param in opt["state"].items()
        for key, val in per_param.items()
    }
    _atomic_save(flat, folder / "optimizer.safetensors")
    meta = {"state": state, "param_groups": opt["param_groups"]}
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / "state.json")


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> dict:
    """Restore what save_checkpoint wrote; returns the saved `state` dict."""
    meta = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    for name, extra in (extra_models or {}).items():
        extra.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in load_file(str(folder / "optimizer.safetensors")).items():
        idx, name = key.split(".", 1)
        per_param.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    return meta["state"]


def read_safetensors(folder: Path, stem: str = "model") -> dict[str, torch.Tensor]:
    """Every tensor of `<stem>.safetensors` or its shards `<stem>-*.safetensors` (pickles are never read)."""
    files = sorted(Path(folder).glob(f"{stem}*.safetensors"))
    if not files:
        raise WeightsError(f"no {stem}*.safetensors in {folder} (pickled checkpoints are not loaded)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


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
