"""The loop skeleton the trainers share (triptych.core.training), on a model small enough to read."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from triptych.core.training import Loop, StepBatches, lr_at, make_accelerator


def test_lr_horizons_extend_a_finished_schedule():
    """A run to 30 steps extended to 60 follows the 60-step cosine's tail after step 30."""
    extended = [lr_at(s, 1.0, 5, 60, horizons=[30]) for s in range(60)]
    assert extended[:30] == [lr_at(s, 1.0, 5, 30) for s in range(30)]
    assert extended[30:] == [lr_at(s, 1.0, 5, 60) for s in range(30, 60)]
    assert extended[29] < 0.01 and 0.4 < extended[30] < 0.6  # decayed to ~0, then restarts half-way up
    assert all(a >= b for a, b in zip(extended[5:29], extended[6:30]))  # each stretch decays
    assert all(a >= b for a, b in zip(extended[30:59], extended[31:60]))
    assert [lr_at(s, 1.0, 5, 60, horizons=()) for s in range(60)] == [lr_at(s, 1.0, 5, 60) for s in range(60)]
    assert [lr_at(s, 1.0, 5, 20, horizons=[30]) for s in range(20)] == [lr_at(s, 1.0, 5, 20) for s in range(20)]


def _square(step: int) -> int:
    return step * step


def test_step_batches_keep_step_order_across_workers():
    loader = DataLoader(StepBatches(_square, start_step=3), batch_size=None, num_workers=2)
    assert list(itertools.islice(iter(loader), 7)) == [k * k for k in range(3, 10)]


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch k of a noisy linear map, drawn from a generator seeded by k alone."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=gen)
    return x, x @ torch.arange(4.0)[:, None] + 0.1 * torch.randn(8, 1, generator=gen)


class TinyLoop(Loop):
    """A linear model under AdamW with warm-up and cosine; records the steps it sampled at."""

    max_grad_norm = 1.0

    def __init__(self, checkpoint: Path, total: int = 6) -> None:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        super().__init__(make_accelerator(), model, optimizer, checkpoint, total, save_every=4, name="tiny")
        self.sampled: list[int] = []

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        x, y = batch
        with self.accelerator.autocast():
            return torch.nn.functional.mse_loss(self.wrapped(x), y)

    def lr(self, step: int, group: dict) -> float:
        return lr_at(step, 0.1, 2, self.total)

    def sample(self, step: int) -> None:
        self.sampled.append(step)


def test_a_stopped_and_resumed_loop_ends_where_an_uninterrupted_one_does(tmp_path, capsys):
    straight = TinyLoop(tmp_path / "straight")
    state = straight.run(_batch, workers=0)
    assert state["step"] == 6 and straight.sampled == [1, 2, 3, 4, 5, 6]

    runs = []
    for _ in range(3):  # 2 steps per call, each a fresh loop resumed from the checkpoint
        loop = TinyLoop(tmp_path / "parts")
        loop.resume()
        runs.append(loop.run(_batch, workers=0, stop_after=2))
    assert runs[:2] == [None, None] and runs[2]["step"] == 6 and loop.sampled == [5, 6]
    out = capsys.readouterr().out
    assert f"stopped at step 2 of 6; run again to resume from {tmp_path / 'parts'}" in out
    assert "resumed from" in out and "at step 4" in out

    for name in ("model.safetensors", "optimizer.safetensors"):  # the final checkpoints, tensor for tensor
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "parts" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (json.loads((tmp_path / run / "state.json").read_text()) for run in ("straight", "parts"))
    assert a["param_groups"] == b["param_groups"] and a["state"].pop("elapsed_s") > 0
    assert a["state"] == {"step": 6, "loss": state["loss"]} == {k: v for k, v in b["state"].items() if k != "elapsed_s"}


def test_a_finished_loop_runs_no_more_steps(tmp_path):
    TinyLoop(tmp_path / "ckpt").run(_batch, workers=0)
    again = TinyLoop(tmp_path / "ckpt")
    again.resume()
    assert again.run(_batch, workers=0)["step"] == 6 and again.sampled == []
