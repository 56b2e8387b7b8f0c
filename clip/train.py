"""Contrastive training of an open_clip model on the shapes world (CLIP or SigLIP loss), through accelerate.

    python -m triptych.clip.train --recipe weights/recipes/shapes_clip.json --out weights/shapes/clip
    accelerate launch -m triptych.clip.train --recipe ...        # many GPUs / nodes

Seeded, resumable from --workdir (safetensors checkpoints every `save_every` steps), progress bar, and a final
export in open_clip's local-dir format (fp16) with a sha256 manifest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import open_clip
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm.auto import tqdm

from triptych.core.checkpoint import (
    current_folder,
    has_checkpoint,
    load_checkpoint,
    replace_folder,
    save_checkpoint,
    training_record,
)
from triptych.core.manifest import MANIFEST, write_manifest
from triptych.core.wordlevel import build_word_tokenizer, save_for_transformers
from triptych.world import DEFAULT_SIDE, random_prompt_spec, render
from triptych.world.dataset import StepBatches, scene_stream
from triptych.world.vocab import world_words

from .encoder import split_preprocess
from .losses import MultiPositiveClipLoss, MultiPositiveSigLipLoss


def model_config(recipe: dict) -> dict:
    """open_clip's model_cfg: the recipe's, plus SigLIP's logit scale and bias initialisation for a SigLIP loss."""
    cfg = dict(recipe["model_cfg"])
    if recipe["train"]["loss"] == "siglip":
        cfg.update(init_logit_scale=math.log(10), init_logit_bias=-10.0)
    return cfg


def build_model(recipe: dict) -> torch.nn.Module:
    """The open_clip CLIP model the recipe describes (what create_model builds from the exported config)."""
    model = open_clip.CLIP(**model_config(recipe))
    # With one token per grid cell a token's content does not change with its position, so position comes only
    # from the positional embedding; open_clip initialises it ~8x smaller than a patch token, which leaves it unused.
    scale = recipe["train"].get("pos_embed_scale", 1.0)
    if scale != 1.0:
        with torch.no_grad():
            model.visual.positional_embedding.mul_(scale)
    return model


def write_tokenizer(recipe: dict, folder: Path) -> None:
    """The world's word-level tokenizer, saved where open_clip's HFTokenizer finds it (the local-dir)."""
    tok = build_word_tokenizer(world_words())
    if tok.get_vocab_size() > recipe["model_cfg"]["text_cfg"]["vocab_size"]:
        raise ValueError("the recipe's vocab_size is smaller than the world tokenizer's vocabulary")
    save_for_transformers(tok, folder, recipe["model_cfg"]["text_cfg"]["context_length"])


@contextmanager
def export_folder(out: Path) -> Iterator[Path]:
    """A weights folder written whole: fill the yielded temp folder; entries of the existing `out` it lacks (a
    model card, a sample grid) are kept, the sha256 manifest is written last, and the folder replaces `out` in one
    switch, so a crash leaves the old export or the new one, each matching its manifest."""
    with replace_folder(out) as tmp:
        yield tmp
        old = current_folder(out)
        for entry in sorted(old.iterdir()) if old else ():
            target = tmp / entry.name
            if entry.name == MANIFEST or target.exists():
                continue
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target)
        write_manifest(tmp)


def export_local_dir(model: torch.nn.Module, recipe: dict, tokenizer_dir: Path, out: Path, info: dict) -> None:
    """open_clip_config.json + open_clip_model.safetensors (fp16) + tokenizer + training.json + manifest, switched
    into `out` whole (a crash keeps the previous export)."""
    config = {"model_cfg": model_config(recipe), "preprocess_cfg": recipe["preprocess_cfg"]}
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    with export_folder(out) as tmp:
        (tmp / "open_clip_config.json").write_text(json.dumps(config, indent=1) + "\n")
        save_file(state, str(tmp / "open_clip_model.safetensors"))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_dir / name, tmp / name)
        (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")


class WorldBatches:
    """Contrastive batch k, drawn from a generator seeded by (seed, rank, k): (B, 3, S, S) uint8 images,
    B prompts, and the (B, B) match matrix [image i satisfies text j]. Served by StepBatches."""

    def __init__(
        self,
        seed: int,
        batch_size: int,
        rank: int = 0,
        twins: float = 0.0,
        transform: Callable[[Image.Image], Image.Image] | None = None,
    ) -> None:
        self.seed, self.batch_size, self.rank, self.twins, self.transform = seed, batch_size, rank, twins, transform

    def __call__(self, step: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        rng = random.Random(f"clip/{self.seed}/{self.rank}/{step}")
        scenes = list(itertools.islice(scene_stream(rng, twins=self.twins), self.batch_size))
        prompts = [random_prompt_spec(scene, rng) for scene in scenes]
        images = [render(scene) for scene in scenes]
        if self.transform is not None:
            images = [self.transform(image) for image in images]
        pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
        match = torch.tensor([[spec.satisfied_by(scene) for _, spec in prompts] for scene in scenes])
        return pixels, [text for text, _ in prompts], match


def eval_geometry(recipe: dict) -> Callable[[Image.Image], Image.Image] | None:
    """The resize/crop steps of the model's eval transform, or None when images already have the model's size."""
    size = recipe["model_cfg"]["vision_cfg"]["image_size"]
    if size == DEFAULT_SIDE:
        return None
    pp = recipe["preprocess_cfg"]
    transform = open_clip.image_transform(
        size,
        is_train=False,
        mean=pp["mean"],
        std=pp["std"],
        interpolation=pp["interpolation"],
        resize_mode=pp["resize_mode"],
    )
    return T.Compose(split_preprocess(transform)[0])


def lr_at(step: int, base: float, warmup: int, total: int, horizons: Sequence[int] = ()) -> float:
    """Linear warm-up, then cosine decay to zero at `total`. With `horizons` (ascending step counts below
    `total`), the decay reaches zero at the first horizon and each later stretch follows the tail of the cosine
    towards the next horizon: the schedule of a run that finished and was then extended, as one recipe."""
    if step < warmup:
        return base * (step + 1) / warmup
    end = next((h for h in (*horizons, total) if step < h <= total), total)
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, end - warmup)))


def train(
    recipe: dict, out: Path, workdir: Path, resume: bool = True, workers: int = 1, stop_after: int | None = None
) -> dict | None:
    """Train (or resume) to the recipe's step count and export to `out`; returns the training record.
    stop_after: checkpoint and return None once this many steps ran in this call (resume later)."""
    cfg = recipe["train"]
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    set_seed(cfg["seed"])
    workdir.mkdir(parents=True, exist_ok=True)
    tok_dir = workdir / "tokenizer"
    if accelerator.is_main_process:
        write_tokenizer(recipe, tok_dir)
    accelerator.wait_for_everyone()
    (tok_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": recipe["model_cfg"]}))
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tok_dir}")

    model = build_model(recipe)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.98), eps=1e-6
    )
    ckpt = workdir / "checkpoint"
    state = {"step": 0, "elapsed_s": 0.0}
    if resume and has_checkpoint(ckpt):
        state = load_checkpoint(ckpt, model, optimizer)
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")
    model, optimizer = accelerator.prepare(model, optimizer)
    mean = torch.tensor(recipe["preprocess_cfg"]["mean"], device=accelerator.device).view(1, 3, 1, 1)
    std = torch.tensor(recipe["preprocess_cfg"]["std"], device=accelerator.device).view(1, 3, 1, 1)
    rank, world = accelerator.process_index, accelerator.num_processes
    loss_fn = (MultiPositiveSigLipLoss if cfg["loss"] == "siglip" else MultiPositiveClipLoss)(rank, world)

    # images are rendered at the world's side and resized exactly as inference will (open_clip's eval transform)
    batches_of = WorldBatches(cfg["seed"], cfg["batch_size"], rank, cfg.get("twins", 0.0), eval_geometry(recipe))
    data = StepBatches(batches_of, state["step"])
    loader = DataLoader(data, batch_size=None, num_workers=workers, prefetch_factor=4 if workers > 0 else None)
    total = cfg["steps"]
    start = time.perf_counter() - state["elapsed_s"]
    bar = tqdm(total=total, initial=state["step"], desc="clip", disable=not accelerator.is_main_process)
    stop_at = min(total, state["step"] + stop_after) if stop_after else total
    batches = iter(loader)
    model.train()
    while state["step"] < total:
        images, texts, match = next(batches)
        images = (images.to(accelerator.device).float() / 255 - mean) / std
        tokens = tokenizer(texts).to(accelerator.device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state["step"], cfg["lr"], cfg["warmup_steps"], total)
        with accelerator.autocast():
            features = model(images, tokens)
            loss = loss_fn(*features, match=match.to(accelerator.device))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        with torch.no_grad():
            accelerator.unwrap_model(model).logit_scale.clamp_(0, math.log(100))
        state["step"] += 1
        state["elapsed_s"] = time.perf_counter() - start
        state["loss"] = round(loss.item(), 4)
        bar.update(1)
        bar.set_postfix(loss=f"{state['loss']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        done = state["step"] in (total, stop_at)
        if (done or state["step"] % cfg["save_every"] == 0) and accelerator.is_main_process:
            save_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, state)
        if done:
            break
    bar.close()
    if state["step"] < total:
        accelerator.print(f"stopped at step {state['step']} of {total}; run again to resume from {ckpt}")
        return None
    info = training_record(recipe, state, accelerator.device, processes=world, open_clip=open_clip.__version__)
    if accelerator.is_main_process:
        export_local_dir(accelerator.unwrap_model(model), recipe, tok_dir, out, info)
        accelerator.print(f"wrote {out} after {info['train_seconds']:.0f} s")
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m triptych.clip.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="weights/recipes/shapes_clip.json", help="recipe JSON")
    parser.add_argument("--out", default="weights/shapes/clip", help="export folder (open_clip local-dir)")
    parser.add_argument("--workdir", default="runs/clip", help="checkpoints, for resuming")
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--seed", type=int, help="override the recipe's seed")
    parser.add_argument("--loss", choices=("clip", "siglip"), help="override the recipe's loss")
    parser.add_argument("--workers", type=int, default=1, help="data-rendering worker processes")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--stop-after", type=int, help="checkpoint and stop after this many steps (resume later)")
    args = parser.parse_args(argv)
    recipe = json.loads(Path(args.recipe).read_text())
    for key in ("steps", "batch_size", "seed", "loss"):
        if getattr(args, key) is not None:
            recipe["train"][key] = getattr(args, key)
    if recipe["train"]["steps"] <= 0 or recipe["train"]["batch_size"] <= 0:
        parser.error("--steps and --batch-size must be positive")
    train(
        recipe,
        Path(args.out),
        Path(args.workdir),
        resume=not args.no_resume,
        workers=args.workers,
        stop_after=args.stop_after,
    )


if __name__ == "__main__":
    main()
