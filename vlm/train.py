"""Staged VLM training through accelerate: a projector-only stage, then projector + decoder (LLaVA's recipe),
the encoder frozen by default, per-module learning rates, seeded, resumable, safetensors checkpoints.

    python -m triptych.vlm.train --recipe weights/recipes/shapes_vlm.json --out weights/shapes/vlm
    python -m triptych.vlm.train --recipe my_recipe.json --data captions_folder/   # bring your own data
    python -m triptych.vlm.train --recipe weights/recipes/llava_smollm2.json --data captions_folder/ --out my_vlm
        # LLaVA on real weights: open_clip ViT-B-32 + SmolLM2-135M-Instruct (--encoder/--decoder take folders)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from triptych import clip
from triptych.core import presets
from triptych.core.checkpoint import export_folder, has_checkpoint, read_checkpoint_state, training_record
from triptych.core.datasets import FileSamples, read_samples
from triptych.core.model_card import WORLD_DATASET, current_card, hub_models, write_card
from triptych.core.training import (
    Loop,
    TrainingOptions,
    lr_at,
    make_accelerator,
    read_recipe,
    run_options,
    start_tracking,
    training_parser,
)

from .config import DecoderConfig
from .data import Batch, WorldSamples, build_world_tokenizer
from .decoder import Decoder
from .model import VLM, VLMConfig
from .tokenizer import TextCodec
from .vision import image_tokens

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
    if cfg.chat_template:
        codec.require_chat_template(f"the recipe (decoder {recipe.get('decoder_path')})")
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


class VLMLoop(Loop):
    """Staged steps: each stage trains its modules (a fresh optimizer at each stage's first step) with its own
    warm-up and cosine; the encoder's patch tokens are computed without gradients, outside autocast."""

    max_grad_norm = 1.0

    def __init__(
        self, accelerator: Accelerator, vlm: VLM, encoder: clip.Encoder, codec: TextCodec, recipe: dict, ckpt: Path
    ) -> None:
        self.stages, self.weight_decay = recipe["stages"], recipe["weight_decay"]
        self.stage = 0  # the index of the stage the optimizer belongs to
        optimizer = make_optimizer(vlm, self.stages[0], self.weight_decay)
        total = sum(stage["steps"] for stage in self.stages)
        super().__init__(accelerator, vlm, optimizer, ckpt, total, recipe["save_every"], name="vlm")
        self.state = {"step": 0, "stage": 0, "elapsed_s": 0.0}
        self.encoder, self.codec = encoder, codec

    def resume(self, with_optimizer: bool = True) -> None:
        """A checkpoint that closed the previous stage restores the weights only: its optimizer does not apply."""
        if has_checkpoint(self.checkpoint):
            saved = read_checkpoint_state(self.checkpoint)
            self.stage = stage_at(self.stages, saved["step"])[0]
            self.optimizer = make_optimizer(self.model, self.stages[self.stage], self.weight_decay)
            super().resume(with_optimizer=saved["stage"] == self.stage)

    def begin_step(self, step: int) -> None:
        index = stage_at(self.stages, step)[0]
        if index != self.stage:  # next stage: new trainable set, new optimizer
            self.stage = index
            self.optimizer = self.accelerator.prepare(make_optimizer(self.model, self.stages[index], self.weight_decay))
        self.state["stage"] = index

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        images, prompts, answers = batch
        config, codec = self.model.config, self.codec
        with torch.no_grad():
            # (B, L, width); clone: an inference tensor cannot enter autograd (with B = 1, Linear saves it as is)
            tokens = image_tokens(self.encoder, images, config).float().clone()
        prompt_ids = [
            codec.prompt_ids(p, config.sep, config.chat_template, config.image_token, config.prompt_special_tokens)
            for p in prompts
        ]
        answer_ids = [[*codec.encode(a), codec.eos_id] for a in answers]
        with self.accelerator.autocast():
            return self.wrapped(tokens, prompt_ids, answer_ids)

    def lr(self, step: int, group: dict) -> float:
        _, first, length = stage_at(self.stages, step)
        return lr_at(step - first, group["base_lr"], self.stages[self.stage].get("warmup_steps", 50), length)

    def postfix(self) -> dict[str, str]:
        return {"stage": self.stages[self.stage]["name"], "loss": f"{self.state['loss']:.3f}"}


def train(
    recipe: dict,
    out: Path,
    workdir: Path,
    resume: bool = True,
    workers: int = 1,
    stop_after: int | None = None,
    data: str | None = None,
    options: TrainingOptions | None = None,
) -> dict | None:
    """Train (or resume) through the recipe's stages and save the VLM folder to `out`; returns the training
    record, or None when `stop_after` stopped it early (run again to resume). `options`: precision, gradient
    accumulation, trackers."""
    accelerator = make_accelerator(options, workdir)
    start_tracking(accelerator, "triptych-vlm", recipe)
    set_seed(recipe["seed"])
    encoder = clip.load(recipe["encoder"], device=accelerator.device, dtype="fp32")
    vlm, codec = build(recipe, encoder)
    loop = VLMLoop(accelerator, vlm, encoder, codec, recipe, workdir / "checkpoint")
    if resume:
        loop.resume()
    batch_size, seed = recipe["batch_size"], recipe["seed"]
    make = (
        FileSamples(read_samples(data, vlm.config.caption_prompt), seed, batch_size)
        if data
        else WorldSamples(
            seed,
            batch_size,
            recipe.get("caption_fraction", 0.5),
            accelerator.process_index,
            recipe.get("occupied_fraction"),
        )
    )
    state = loop.run(make, workers, stop_after)
    if state is None:
        return None
    info = training_record(recipe, state, accelerator.device, data=data or "shapes world")
    if accelerator.is_main_process:  # switched into `out` whole: a crash keeps the previous export
        with export_folder(out) as tmp:
            vlm.save_pretrained(tmp)
            codec.save(tmp, vlm.config.decoder.max_position_embeddings)
            (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")
            write_card(
                tmp,
                "vlm",
                name=out.name,
                summary=f"A VLM trained by triptych on {data or 'the shapes world'}: captions and answers.",
                base_model=hub_models([recipe["encoder"], recipe.get("decoder_path")]),
                datasets=None if data else [WORLD_DATASET],
                keep_from=current_card(out),
            )
    return info


def main(argv: list[str] | None = None) -> None:
    parser = training_parser(
        "python -m triptych.vlm.train",
        __doc__,
        "weights/recipes/shapes_vlm.json",
        "weights/shapes/vlm",
        "runs/vlm",
        encoder_option=True,
    )
    parser.add_argument("--data", help="a folder of images with .txt captions, or a JSONL of {image, prompt, answer}")
    parser.add_argument("--decoder", help="override the recipe's decoder: a Llama-family folder or preset name")
    args = parser.parse_args(argv)
    recipe = read_recipe(args)
    if args.decoder:
        recipe["decoder_path"] = args.decoder
    if any(s["steps"] <= 0 for s in recipe["stages"]) or recipe["batch_size"] <= 0:
        parser.error("every stage needs positive steps, and batch_size must be positive")
    train(recipe, **run_options(args), data=args.data)


if __name__ == "__main__":
    main()
