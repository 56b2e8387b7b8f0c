"""The training loop the three trainers share: accelerate set-up, step-addressed batches, the learning-rate
schedule, resume from a checkpoint, the step loop with its progress bar and checkpoints, the exported folder, and
the command-line flags every trainer takes.

A trainer subclasses `Loop`, supplies `loss` (the loss of one batch) and `lr`, and overrides the hooks it needs
(`begin_step`, `after_update`, `sample`, `postfix`). A run stopped by `stop_after` and resumed ends bit for bit
where an uninterrupted one does: batch k depends on k alone (`StepBatches`), and a checkpoint holds the model,
the optimizer state, any extra models (an EMA) and the loop's state.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint

PRECISIONS = ("no", "fp16", "bf16", "fp8")


@dataclass(frozen=True)
class TrainingOptions:
    """How to run a recipe, not what it trains (so the same recipe gives the same model under any of them)."""

    mixed_precision: str | None = None  # one of PRECISIONS; None: accelerate's (see mixed_precision)
    gradient_accumulation_steps: int = 1  # each step's batch as this many micro-batches: same training, less memory
    log_with: tuple[str, ...] = ()  # accelerate trackers: "tensorboard", "wandb", "mlflow", ..., or "all"
    logging_dir: Path | None = None  # trackers' files; default <workdir>/logs

    def __post_init__(self) -> None:
        if self.mixed_precision not in (None, *PRECISIONS):
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        steps = self.gradient_accumulation_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be a whole number >= 1, got {steps!r}")


def mixed_precision(flag: str | None) -> str | None:
    """The precision to train in: the flag; else, under `accelerate launch`, whatever it was told (its
    --mixed_precision or config: None lets Accelerator read it); else the `accelerate config` file's; else bf16 on
    a CUDA GPU that has it, fp16 on one that does not, full precision on the CPU."""
    if flag is not None:
        return flag
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    from accelerate.commands.config.config_args import default_config_file, load_config_from_file

    if Path(default_config_file).is_file():
        configured = getattr(load_config_from_file(default_config_file), "mixed_precision", None)
        if configured:
            return str(configured)
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(options: TrainingOptions | None = None, workdir: Path | None = None) -> Accelerator:
    """The trainers' accelerator: precision as `mixed_precision` decides, gradient accumulation, and trackers
    (their files under `options.logging_dir`, default `<workdir>/logs`)."""
    options = options or TrainingOptions()
    log_with = list(options.log_with) or None
    logs = options.logging_dir or (Path(workdir) / "logs" if workdir is not None else None)
    return Accelerator(
        mixed_precision=mixed_precision(options.mixed_precision),
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=logs if log_with else None,
    )


def start_tracking(accelerator: Accelerator, project: str, recipe: dict) -> None:
    """Open the trackers (a no-op without any), the recipe's scalar settings as the run's hyper-parameters."""
    if accelerator.log_with:
        accelerator.init_trackers(project, config=_scalars(recipe))


def log_image(accelerator: Accelerator, tag: str, image: Image.Image, step: int) -> None:
    """Send a sample grid to every tracker that takes images."""
    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({tag: pixels[None]}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({tag: [pixels]}, step=step)


def _scalars(tree: dict, prefix: str = "") -> dict[str, int | float | str | bool]:
    """Nested recipe -> {"a/b": scalar}; lists become strings (trackers' hparams take scalars only)."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _scalars(value, f"{name}/")
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        elif value is not None:
            out[name] = json.dumps(value)
    return out


def split_batch(batch: Sequence[Sequence], parts: int) -> list[tuple]:
    """A batch of fields (images, prompts, ...: each a tensor or list with one entry per sample; the DataLoader
    may hand the tuple over as a list) as `parts` equal micro-batches, every field cut alike. ValueError when the
    batch does not divide evenly."""
    sizes = {len(field) for field in batch}
    if len(sizes) != 1:
        raise ValueError(f"the batch's fields have different lengths {sorted(sizes)}")
    size = sizes.pop()
    if size % parts:
        raise ValueError(f"a batch of {size} does not split into {parts} equal micro-batches (gradient accumulation)")
    step = size // parts
    return [tuple(field[i * step : (i + 1) * step] for field in batch) for i in range(parts)]


def lr_at(step: int, base: float, warmup: int, total: int, horizons: Sequence[int] = ()) -> float:
    """Linear warm-up, then cosine decay to zero at `total`. With `horizons` (ascending step counts below
    `total`), the decay reaches zero at the first horizon and each later stretch follows the tail of the cosine
    towards the next horizon: the schedule of a run that finished and was then extended, as one recipe."""
    if step < warmup:
        return base * (step + 1) / warmup
    end = next((h for h in (*horizons, total) if step < h <= total), total)
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, end - warmup)))


class StepBatches(IterableDataset):
    """Batches addressed by training step: `make_batch(k)` must depend on k alone (seed its generator with k),
    so a resumed run sees exactly the batches an uninterrupted one would. Worker w of n makes batches
    w, w + n, ...; the DataLoader's round-robin over workers (batch_size=None) restores the order."""

    def __init__(self, make_batch: Callable[[int], Any], start_step: int = 0) -> None:
        self.make_batch, self.start_step = make_batch, start_step

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in itertools.count(self.start_step + worker, workers):
            yield self.make_batch(step)


class Loop:
    """One model's training: resume, then steps `state["step"]` .. `total`, a checkpoint every `save_every` steps
    and at the end (on the main process). Subclasses supply `loss` and `lr`; the other hooks default to nothing.

    model: the bare module (saved in checkpoints; `self.wrapped` is what `accelerator.prepare` made of it);
    prefix: put before the resume and stop messages (e.g. "vae: "); extra_models: saved beside the model (EMA).
    """

    loss_digits = 4  # state["loss"] is rounded to this many decimals (checkpoints and training.json hold it)
    max_grad_norm: float | None = None  # clip the trained parameters' gradient norm to this, when set

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        checkpoint: Path,
        total: int,
        save_every: int,
        name: str,
        prefix: str = "",
        extra_models: dict[str, torch.nn.Module] | None = None,
    ) -> None:
        self.accelerator, self.model, self.wrapped, self.optimizer = accelerator, model, model, optimizer
        self.checkpoint, self.total, self.save_every = checkpoint, total, save_every
        self.name, self.prefix, self.extra_models = name, prefix, extra_models
        self.state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0}
        self.micro = 0  # which micro-batch of the step `loss` is given (gradient accumulation)

    # ------------------------------------------------------------------ what a trainer supplies
    def loss(self, batch: Any, step: int) -> torch.Tensor:
        """The loss of one batch (run the model under `self.accelerator.autocast()`)."""
        raise NotImplementedError

    def lr(self, step: int, group: dict) -> float:
        """The learning rate of an optimizer parameter group at `step`."""
        raise NotImplementedError

    def begin_step(self, step: int) -> None:
        """Before the step's batch (e.g. switch the trained modules and `self.optimizer`)."""

    def after_update(self) -> None:
        """After the optimizer step (e.g. clamp a parameter, update an EMA)."""

    def sample(self, step: int) -> None:
        """Main process only, after the step's checkpoint (e.g. write sample grids or metrics)."""

    def postfix(self) -> dict[str, str]:
        """What the progress bar shows beside the count."""
        return {"loss": f"{self.state['loss']:.3f}"}

    # ------------------------------------------------------------------ the loop
    def _accumulate(self, batch: Any, step: int) -> float:
        """Gradients of the step's batch, as `accelerator.gradient_accumulation_steps` micro-batches (each loss
        divided by their count in `accelerator.backward`; gradients synchronised across processes once, on the
        last); returns the batch's loss. `self.micro` tells `loss` which micro-batch it has."""
        acc = self.accelerator
        parts = split_batch(batch, acc.gradient_accumulation_steps) if acc.gradient_accumulation_steps > 1 else [batch]
        total = 0.0
        for self.micro, part in enumerate(parts):
            last = self.micro == len(parts) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.wrapped):
                loss = self.loss(part, step)
                acc.backward(loss)
            total += loss.item() / len(parts)
        self.micro = 0
        return total

    def resume(self, with_optimizer: bool = True) -> None:
        """Restore the checkpoint, if there is one: weights, extra models, state, and the optimizer's state
        unless `with_optimizer` is False (the checkpoint's optimizer does not apply)."""
        if not has_checkpoint(self.checkpoint):
            return
        optimizer = self.optimizer if with_optimizer else None
        self.state = load_checkpoint(self.checkpoint, self.model, optimizer, self.extra_models)
        self.accelerator.print(f"{self.prefix}resumed from {self.checkpoint} at step {self.state['step']}")

    def run(self, make_batch: Callable[[int], Any], workers: int, stop_after: int | None = None) -> dict | None:
        """Train to `total` (or `stop_after` more steps) on `make_batch(step)`, loaded by `workers` processes;
        returns the state, or None when stopped early (run again to resume)."""
        acc, state, total = self.accelerator, self.state, self.total
        self.wrapped, self.optimizer = acc.prepare(self.model, self.optimizer)
        loader = DataLoader(
            StepBatches(make_batch, state["step"]),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4 if workers > 0 else None,
        )
        batches = iter(loader)
        start = time.perf_counter() - state["elapsed_s"]
        stop_at = min(total, state["step"] + stop_after) if stop_after else total
        bar = tqdm(total=total, initial=state["step"], desc=self.name, disable=not acc.is_main_process)
        while state["step"] < stop_at:
            self.begin_step(state["step"])
            batch = next(batches)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr(state["step"], group)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._accumulate(batch, state["step"])
            if self.max_grad_norm is not None:
                trained = [p for p in self.model.parameters() if p.requires_grad]
                acc.clip_grad_norm_(trained, self.max_grad_norm)
            self.optimizer.step()
            self.after_update()
            state["step"] += 1
            state.update(loss=round(loss, self.loss_digits), elapsed_s=time.perf_counter() - start)
            lrs = {f"{self.name}/lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
            acc.log({f"{self.name}/loss": loss, **lrs}, step=state["step"])
            bar.update(1)
            bar.set_postfix(**self.postfix())
            step = state["step"]
            if acc.is_main_process and (step in (total, stop_at) or step % self.save_every == 0):
                save_checkpoint(self.checkpoint, self.model, self.optimizer, state, self.extra_models)
            if acc.is_main_process:
                self.sample(step)
        bar.close()
        if state["step"] < total:
            stopped = f"stopped at step {state['step']} of {total}"
            acc.print(f"{self.prefix}{stopped}; run again to resume from {self.checkpoint}")
            return None
        return state


# ---------------------------------------------------------------------- the command line
def training_parser(
    prog: str, doc: str, recipe: str, out: str, workdir: str, encoder_option: bool = False
) -> argparse.ArgumentParser:
    """A trainer's command line: --recipe, --out, --workdir (defaults given), --workers, --no-resume and
    --stop-after, and --encoder for trainers that build on the shared encoder; the trainer adds its own flags."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=recipe, help="recipe JSON")
    parser.add_argument("--out", default=out, help="the exported weights folder")
    parser.add_argument("--workdir", default=workdir, help="checkpoints, for resuming")
    parser.add_argument("--workers", type=int, default=1, help="data-loading worker processes")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--stop-after", type=int, help="checkpoint and stop after this many steps (resume later)")
    if encoder_option:
        parser.add_argument("--encoder", help="override the recipe's encoder (a clip.load name, preset or folder)")
    run = parser.add_argument_group("how to run it (the recipe decides what is trained)")
    run.add_argument(
        "--mixed-precision",
        choices=PRECISIONS,
        help="default: accelerate launch's or `accelerate config`'s; else bf16 on CUDA (fp16 without bf16), no on CPU",
    )
    run.add_argument(
        "--gradient-accumulation-steps",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="run each step's batch as N micro-batches (same training, less memory)",
    )
    run.add_argument(
        "--log-with", nargs="+", default=[], metavar="TRACKER", help="accelerate trackers: tensorboard, wandb, ..., all"
    )
    run.add_argument("--logging-dir", type=Path, help="where trackers write (default: WORKDIR/logs)")
    return parser


def _at_least_one(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def read_recipe(args: argparse.Namespace) -> dict:
    """The recipe JSON named by --recipe, with --encoder (where the trainer has it) in place of its encoder."""
    recipe = json.loads(Path(args.recipe).read_text())
    if getattr(args, "encoder", None):
        recipe["encoder"] = args.encoder
    return recipe


def run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments every trainer's `train` takes after the recipe, from the shared flags."""
    return {
        "out": Path(args.out),
        "workdir": Path(args.workdir),
        "resume": not args.no_resume,
        "workers": args.workers,
        "stop_after": args.stop_after,
        "options": TrainingOptions(
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=tuple(args.log_with),
            logging_dir=args.logging_dir,
        ),
    }
