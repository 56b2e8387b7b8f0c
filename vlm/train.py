"""Staged VLM training through accelerate: a projector-only stage, then projector + decoder (LLaVA's recipe),
the encoder frozen by default, per-module learning rates, seeded, resumable, safetensors checkpoints.

    python -m triptych.vlm.train --recipe weights/recipes/shapes_vlm.json --out weights/shapes/vlm
    python -m triptych.vlm.train --recipe my_recipe.json --data captions_folder/   # bring your own data
    python -m triptych.vlm.train --recipe weights/recipes/llava_smollm2.json --data captions_folder/ --out my_vlm
        # LLaVA on real weights: open_clip ViT-B-32 + SmolLM2-135M-Instruct (--encoder/--decoder take folders)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from triptych import clip
from triptych.clip.train import export_folder, lr_at
from triptych.core import presets
from triptych.core.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    training_record,
)
from triptych.core.datasets import FileSamples, read_samples
from triptych.world.dataset import StepBatches

from .config import DecoderConfig
from .data import WorldSamples, build_world_tokenizer
from .decoder import Decoder
from .model import VLM, VLMConfig
from .tokenizer import TextCodec

MODULES = ("projector", "decoder")


def build(recipe: dict, encoder: clip.Encoder) -> tuple[VLM, TextCodec]:
    """A fresh VLM (or one on a pretrained Llama-family decoder folder) and its tokenizer."""
    special = recipe.get("special_tokens", {})
    if recipe.get("decoder_path"):
        path = recipe["decoder_path"]
        if path in presets.PRESETS:  # a preset's language model, fetched (or found in the hub cache)
            path = presets.fetch(path)["language_model"]
        decoder = Decoder.from_pretrained(path)
        codec = TextCodec.load(path, **special)
    else:
        codec = TextCodec(build_world_tokenizer())
        decoder = Decoder(DecoderConfig(**{**recipe["decoder"], "vocab_size": codec.vocab_size}))
    cfg = VLMConfig(
        vision_width=encoder.vision_width,
        encoder=recipe["encoder"],
        decoder=decoder.config,
        special_tokens=special,
        **recipe.get("vlm", {}),
    )
    return VLM(cfg, decoder), codec


def stage_at(stages: list[dict], step: int) -> tuple[int, int, int]:
    """(stage index, first step of that stage, its length) for a global step."""
    first = 0
    for i, stage in enumerate(stages):
        if step < first + stage["steps"]:
            return i, first, stage["steps"]
        first += stage["steps"]
    return len(stages) - 1, first - stages[-1]["steps"], stages[-1]["steps"]


def make_optimizer(vlm: VLM, stage: dict, weight_decay: float) -> torch.optim.Optimizer:
    """Freeze every module the stage does not train; one parameter group (own learning rate) per trained module."""
    groups = []
    for name in MODULES:
        module = getattr(vlm, name)
        trained = name in stage["train"]
        module.requires_grad_(trained)
        if trained:
            groups.append(
                {
                    "params": list(module.parameters()),
                    "lr": stage["lr"][name],
                    "base_lr": stage["lr"][name],
                    "name": name,
                }
            )
    return torch.optim.AdamW(groups, weight_decay=weight_decay, betas=(0.9, 0.95))


def train(
    recipe: dict,
    out: Path,
    workdir: Path,
    resume: bool = True,
    workers: int = 1,
    stop_after: int | None = None,
    data: str | None = None,
) -> dict | None:
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    set_seed(recipe["seed"])
    encoder = clip.load(recipe["encoder"], device=accelerator.device, dtype="fp32")
    vlm, codec = build(recipe, encoder)
    stages, total = recipe["stages"], sum(s["steps"] for s in recipe["stages"])
    ckpt = workdir / "checkpoint"
    state = {"step": 0, "stage": 0, "elapsed_s": 0.0}
    stage_index = 0
    optimizer = make_optimizer(vlm, stages[0], recipe["weight_decay"])
    if resume and has_checkpoint(ckpt):
        saved = read_checkpoint_state(ckpt)
        stage_index = stage_at(stages, saved["step"])[0]
        optimizer = make_optimizer(vlm, stages[stage_index], recipe["weight_decay"])
        # a checkpoint that closed the previous stage restores the weights only: its optimizer state does not apply
        state = load_checkpoint(ckpt, vlm, optimizer if saved["stage"] == stage_index else None)
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")
    caption_prompt = vlm.config.caption_prompt
    vlm, optimizer = accelerator.prepare(vlm, optimizer)
    batch_size, seed = recipe["batch_size"], recipe["seed"]
    make = (
        FileSamples(read_samples(data, caption_prompt), seed, batch_size)
        if data
        else WorldSamples(
            seed,
            batch_size,
            recipe.get("caption_fraction", 0.5),
            accelerator.process_index,
            recipe.get("occupied_fraction"),
        )
    )
    loader = DataLoader(
        StepBatches(make, state["step"]),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers > 0 else None,
    )
    batches = iter(loader)
    start = time.perf_counter() - state["elapsed_s"]
    stop_at = min(total, state["step"] + stop_after) if stop_after else total
    bar = tqdm(total=total, initial=state["step"], desc="vlm", disable=not accelerator.is_main_process)
    model = accelerator.unwrap_model(vlm)
    while state["step"] < stop_at:
        index, first, length = stage_at(stages, state["step"])
        if index != stage_index:  # next stage: new trainable set, new optimizer
            stage_index = index
            optimizer = accelerator.prepare(make_optimizer(model, stages[index], recipe["weight_decay"]))
        images, prompts, answers = next(batches)
        with torch.no_grad():
            tokens = encoder.patch_tokens(images, layer=model.config.vision_layer).float()  # (B, L, width)
        prompt_ids = [[codec.bos_id, *codec.encode(p), *codec.encode(model.config.sep)] for p in prompts]
        answer_ids = [[*codec.encode(a), codec.eos_id] for a in answers]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state["step"] - first, group["base_lr"], stages[index].get("warmup_steps", 50), length)
        with accelerator.autocast():
            loss = vlm(tokens, prompt_ids, answer_ids)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        state.update(
            step=state["step"] + 1, stage=index, loss=round(loss.item(), 4), elapsed_s=time.perf_counter() - start
        )
        bar.update(1)
        bar.set_postfix(stage=stages[index]["name"], loss=f"{state['loss']:.3f}")
        done = state["step"] in (total, stop_at)
        if (done or state["step"] % recipe["save_every"] == 0) and accelerator.is_main_process:
            save_checkpoint(ckpt, model, optimizer, state)
    bar.close()
    if state["step"] < total:
        accelerator.print(f"stopped at step {state['step']} of {total}; run again to resume from {ckpt}")
        return None
    info = training_record(recipe, state, accelerator.device, data=data or "shapes world")
    if accelerator.is_main_process:  # switched into `out` whole: a crash keeps the previous export
        with export_folder(out) as tmp:
            model.save_pretrained(tmp)
            codec.tokenizer.save(str(tmp / "tokenizer.json"))
            (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m triptych.vlm.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="weights/recipes/shapes_vlm.json")
    parser.add_argument("--out", default="weights/shapes/vlm")
    parser.add_argument("--workdir", default="runs/vlm")
    parser.add_argument("--data", help="a folder of images with .txt captions, or a JSONL of {image, prompt, answer}")
    parser.add_argument("--encoder", help="override the recipe's encoder (a clip.load name, preset or folder)")
    parser.add_argument("--decoder", help="override the recipe's decoder: a Llama-family folder or preset name")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--stop-after", type=int)
    args = parser.parse_args(argv)
    recipe = json.loads(Path(args.recipe).read_text())
    if args.encoder:
        recipe["encoder"] = args.encoder
    if args.decoder:
        recipe["decoder_path"] = args.decoder
    if any(s["steps"] <= 0 for s in recipe["stages"]) or recipe["batch_size"] <= 0:
        parser.error("every stage needs positive steps, and batch_size must be positive")
    train(
        recipe,
        Path(args.out),
        Path(args.workdir),
        resume=not args.no_resume,
        workers=args.workers,
        stop_after=args.stop_after,
        data=args.data,
    )


if __name__ == "__main__":
    main()
