"""Crash injection in every save a trainer makes: a checkpoint, a finished generator part, an exported folder.

A crash is simulated by raising `Crash` (a BaseException, so no `except Exception` clean-up runs, as after a kill)
before or after the n-th file operation of a save. Whatever n, the next run must find the previous complete
checkpoint or the new one (weights, optimizer state, EMA and step from the same save, compared tensor by tensor),
and a resumed trainer must end exactly where an uninterrupted one does.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from tests.test_vlm import RECIPE as VLM_RECIPE
from tests.tiny_models import make_tiny_encoder_dir, tiny_recipe
from triptych.clip import train as clip_train
from triptych.core import checkpoint
from triptych.core.checkpoint import current_folder, has_checkpoint, load_checkpoint, save_checkpoint
from triptych.core.errors import WeightsError
from triptych.core.manifest import verify_manifest

Op = tuple[object, str]
SAVE_OPS: list[Op] = [  # every call through which a save touches the disk
    (checkpoint, "save_file"),
    (clip_train, "save_file"),
    (Path, "write_text"),
    (Path, "mkdir"),
    (shutil, "copy"),
    (shutil, "copy2"),
    (os, "replace"),
    (os, "rename"),
    (shutil, "rmtree"),
]
RENAMES: list[Op] = [(os, "replace"), (os, "rename")]


class Crash(BaseException):
    """The process dies here."""


@contextmanager
def crash_at(n: int, when: str, ops: list[Op], where: str) -> Iterator[None]:
    """Raise Crash before (or after) the n-th call of `ops` whose arguments name a path containing `where`."""
    calls = itertools.count(1)

    def wrap(fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            paths = [str(a) for a in args if isinstance(a, (str, os.PathLike))]
            hit = any(where in p for p in paths) and next(calls) == n
            if hit and when == "before":
                raise Crash(f"before {fn.__name__}{paths}")
            out = fn(*args, **kwargs)
            if hit:
                raise Crash(f"after {fn.__name__}{paths}")
            return out

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        for owner, name in ops:
            mp.setattr(owner, name, wrap(getattr(owner, name)))
        yield


def siblings(folder: Path) -> set[str]:
    return {p.name for p in folder.parent.glob(folder.name + ".*")}


# ---------------------------------------------------------------------- save_checkpoint itself
class Trainee:
    """A tiny model with real AdamW state and an EMA copy, trained a few steps at a time."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
        self.ema = copy.deepcopy(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.step = 0

    def train(self, steps: int) -> Trainee:
        for _ in range(steps):
            x = torch.randn(16, 4, generator=torch.Generator().manual_seed(self.step))
            loss = (self.model(x) - x[:, :2]).square().mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.model.parameters()):
                    e.lerp_(p, 0.1)
            self.step += 1
        return self

    def save(self, folder: Path) -> None:
        save_checkpoint(folder, self.model, self.optimizer, {"step": self.step}, {"ema": self.ema})

    def load(self, folder: Path) -> Trainee:
        self.step = load_checkpoint(folder, self.model, self.optimizer, {"ema": self.ema})["step"]
        return self

    def snapshot(self) -> dict:
        opt = self.optimizer.state_dict()
        return {
            "step": self.step,
            "tensors": {
                **{f"model.{k}": v.clone() for k, v in self.model.state_dict().items()},
                **{f"ema.{k}": v.clone() for k, v in self.ema.state_dict().items()},
                **{f"opt.{i}.{k}": v.clone() for i, s in opt["state"].items() for k, v in s.items()},
            },
            "groups": json.loads(json.dumps(opt["param_groups"])),
        }


def same(a: dict, b: dict) -> bool:
    ta, tb = a["tensors"], b["tensors"]
    tensors_equal = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    return tensors_equal and a["step"] == b["step"] and a["groups"] == b["groups"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_anywhere_in_a_save_leaves_one_whole_checkpoint(tmp_path, when):
    """Crash before/after each file operation of saving step 20 over step 10: the folder then loads as exactly
    step 10 or exactly step 20, and the next save works and cleans up."""
    pristine, folder = tmp_path / "pristine", tmp_path / "work/checkpoint"
    trainee = Trainee().train(10)
    old = trainee.snapshot()
    trainee.save(pristine)
    new = trainee.train(10).snapshot()
    outcomes = []
    for n in itertools.count(1):
        shutil.rmtree(folder.parent, ignore_errors=True)
        shutil.copytree(pristine, folder)
        try:
            with crash_at(n, when, SAVE_OPS, str(folder.parent)):
                trainee.save(folder)
        except Crash:
            pass
        else:
            break  # n passed the save's last operation
        assert has_checkpoint(folder), f"crash {when} op {n} lost the previous checkpoint"
        loaded = Trainee().load(folder).snapshot()
        assert same(loaded, old) or same(loaded, new), f"crash {when} op {n} left a mixed checkpoint"
        outcomes.append("new" if same(loaded, new) else "old")
        trainee.save(folder)  # the next save after the crash
        assert same(Trainee().load(folder).snapshot(), new) and siblings(folder) == set()
    assert n > 5 and set(outcomes) == {"old", "new"}, outcomes


@pytest.mark.parametrize("name", ["state.json", "model.safetensors", "optimizer.safetensors", "ema.safetensors"])
def test_a_checkpoint_missing_a_file_is_refused_by_name(tmp_path, name):
    trainee = Trainee().train(2)
    trainee.save(tmp_path / "checkpoint")
    (tmp_path / "checkpoint" / name).unlink()
    before = Trainee().snapshot()
    fresh = Trainee()
    with pytest.raises(WeightsError, match=f"{name} is missing"):
        fresh.load(tmp_path / "checkpoint")
    assert same(fresh.snapshot(), before)  # nothing was loaded before the check


def test_leftover_temp_folders_are_never_read(tmp_path):
    folder = tmp_path / "checkpoint"
    (tmp_path / "checkpoint.partial").mkdir()
    (tmp_path / "checkpoint.partial/state.json").write_text("{}")
    assert not has_checkpoint(folder)
    with pytest.raises(WeightsError, match="no checkpoint"):
        Trainee().load(folder)


# ---------------------------------------------------------------------- trainers resume through a crash
# after the save's first rename (only `.previous` is whole then); after its second (the switch, before clean-up)
TRAINER_CRASHES = {"first-rename": (RENAMES, 1), "second-rename": (RENAMES, 2)}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    return str(make_tiny_encoder_dir(tmp_path_factory.mktemp("encoder")))


@pytest.fixture(scope="module")
def clip_straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clip_straight")
    clip_train.train(tiny_recipe(steps=4), out / "out", out / "work", workers=0)
    return out / "out"


@pytest.mark.parametrize("crash", TRAINER_CRASHES)
def test_clip_training_resumes_exactly_after_a_crashed_checkpoint(tmp_path, clip_straight, crash):
    recipe, out, work = tiny_recipe(steps=4), tmp_path / "out", tmp_path / "work"
    assert clip_train.train(recipe, out, work, workers=0, stop_after=2) is None  # a whole checkpoint at step 2
    ops, n = TRAINER_CRASHES[crash]
    with pytest.raises(Crash), crash_at(n, "after", ops, str(work / "checkpoint")):
        clip_train.train(recipe, out, work, workers=0)  # dies saving step 4
    assert clip_train.train(recipe, out, work, workers=0)["steps"] == 4
    a, b = load_file(clip_straight / "open_clip_model.safetensors"), load_file(out / "open_clip_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def vlm_setup(tmp_path_factory, encoder_dir) -> tuple[dict, Path]:
    from triptych.vlm.train import train

    root = tmp_path_factory.mktemp("vlm_straight")
    recipe = {**VLM_RECIPE, "encoder": encoder_dir}
    train(recipe, root / "out", root / "work", workers=0)
    return recipe, root / "out"


@pytest.mark.parametrize("crash", TRAINER_CRASHES)
def test_vlm_training_resumes_exactly_after_a_crashed_checkpoint(tmp_path, vlm_setup, crash):
    """The crash hits the first save of stage 2: the run resumes from the checkpoint that closed stage 1 (weights
    only, read through the trainer's own stage check) or from the new one, and ends where a straight run does."""
    from triptych.vlm.train import train

    recipe, straight = vlm_setup
    out, work = tmp_path / "out", tmp_path / "work"
    assert train(recipe, out, work, workers=0, stop_after=2) is None
    ops, n = TRAINER_CRASHES[crash]
    with pytest.raises(Crash), crash_at(n, "after", ops, str(work / "checkpoint")):
        train(recipe, out, work, workers=0)  # dies saving step 3
    train(recipe, out, work, workers=0)
    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- exported folders
def test_a_crash_anywhere_in_an_export_keeps_the_previous_export_whole(tmp_path):
    """Export B over export A (which has a model card), crashing before/after each file operation: the folder
    found is A or B, each matching its manifest; the next export completes and keeps the card."""
    recipe, out = tiny_recipe(), tmp_path / "out"
    clip_train.write_tokenizer(recipe, tmp_path / "tok")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(clip_train.build_model(recipe))
    weights = [{k: v.half() for k, v in m.state_dict().items()} for m in models]

    def export(index: int) -> None:
        clip_train.export_local_dir(models[index], recipe, tmp_path / "tok", out, {"model": index})

    crashes = 0
    for when in ("before", "after"):
        for n in itertools.count(1):
            shutil.rmtree(out, ignore_errors=True)
            export(0)
            (out / "README.md").write_text("model card\n")
            try:
                with crash_at(n, when, SAVE_OPS, str(out)):
                    export(1)
            except Crash:
                crashes += 1
            else:
                break
            found = current_folder(out)
            verify_manifest(found)
            state = load_file(found / "open_clip_model.safetensors")
            assert any(all(torch.equal(state[k], w[k]) for k in w) for w in weights), f"mixed export: {when} {n}"
            export(1)  # the next run's export
            verify_manifest(out)
            card = (out / "README.md").read_text()  # the card's text kept, its Hub metadata (re)written above it
            assert card.startswith("---\n") and card.endswith("\nmodel card\n") and siblings(out) == set()
    assert crashes > 10


# ---------------------------------------------------------------------- finished generator parts
DIFFUSION_CRASHES = {
    # diffusers writes config.json first: crash before the VAE's weights are written
    "vae-config-only": ([(safetensors.torch, "save_file")], "movq", "before"),
    # the VAE folder is whole, its record vae.json not yet written
    "vae-without-record": ([(Path, "write_text")], "vae.json", "before"),
}


class Stop(Exception):
    """Ends a generator run once its VAE part is finished (the prior and decoder are not needed here)."""


def train_vae_part(recipe: dict, work: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Run the generator trainer up to its prior; the finished VAE's weights and record (without wall time)."""
    from triptych.diffusion import train as diffusion_train

    def stop(*args, **kwargs):
        raise Stop

    with pytest.MonkeyPatch.context() as mp, pytest.raises(Stop):
        mp.setattr(diffusion_train, "train_prior", stop)
        diffusion_train.train(recipe, work / "out", work, workers=0)
    record = json.loads((work / "finished/vae.json").read_text())
    record.pop("elapsed_s")
    return load_file(work / "finished/movq/diffusion_pytorch_model.safetensors"), record


@pytest.fixture(scope="module")
def generator_setup(tmp_path_factory, encoder_dir) -> tuple[dict, tuple]:
    from tests.tiny_diffusion import tiny_recipe as tiny_generator_recipe

    recipe = tiny_generator_recipe(encoder_dir, steps=1)
    recipe["vae"]["stats_samples"] = 16
    return recipe, train_vae_part(recipe, tmp_path_factory.mktemp("gen_straight"))


@pytest.mark.parametrize("crash", DIFFUSION_CRASHES)
def test_a_crash_while_finishing_a_generator_part_redoes_that_part(tmp_path, generator_setup, crash):
    """The part's marker comes last: after the crash the VAE is not finished, and the next run redoes it (from its
    checkpoint) into exactly the VAE and record an uninterrupted run finishes."""
    from triptych.diffusion.train import train

    recipe, (weights, record) = generator_setup
    ops, name, when = DIFFUSION_CRASHES[crash]
    with pytest.raises(Crash), crash_at(1, when, ops, str(tmp_path / "finished" / name)):
        train(recipe, tmp_path / "out", tmp_path, workers=0)
    assert not (tmp_path / "finished/vae.json").exists()
    again, again_record = train_vae_part(recipe, tmp_path)
    assert again_record == record
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
