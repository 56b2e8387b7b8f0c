"""Contrastive training of an open_clip model on the shapes world (CLIP or SigLIP loss), through accelerate.

Stages: `train` (both towers, multi-positive targets), then, when the recipe has them, NegCLIP's recipe: each
scene's prompt joined by a minimal edit of it as a hard negative (world/edits.py). `binding` trains on
compositional probes with their exact edits (which colour goes with which shape, left from right, which group has
two); `binding_mix` then mixes every prompt form back in, so zero-shot classification recovers while binding
stays (probes alone cost position and count classification; mixed from the start, relations are never learned).
Both towers train: left from right must be told apart in the image embedding as well (`"freeze": ["visual"]`
trains the text tower alone, keeping image features bit for bit).

    python -m triptych.clip.train --recipe weights/recipes/shapes_clip.json --out weights/shapes/clip
    python -m triptych.clip.train --init weights/shapes/clip --out new_clip   # the binding stages alone, from a folder
    accelerate launch -m triptych.clip.train --recipe ...        # many GPUs / nodes

Seeded, resumable from --workdir (safetensors checkpoints every `save_every` steps), progress bar, and a final
export in open_clip's local-dir format (fp16) with a sha256 manifest.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms as T

from triptych.core.checkpoint import export_folder, training_record
from triptych.core.manifest import sha256
from triptych.core.model_card import WORLD_DATASET, current_card, write_card
from triptych.core.tokenizer_files import save_for_transformers
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
from triptych.core.weights_files import load_safetensors
from triptych.core.wordlevel import SPECIAL_ROLES, build_word_tokenizer
from triptych.world import DEFAULT_SIDE, random_prompt_spec, render, sample_scene
from triptych.world.dataset import scene_stream
from triptych.world.edits import EDIT_KINDS, probe, with_hard_negative
from triptych.world.vocab import world_words

from .encoder import split_preprocess
from .losses import MultiPositiveClipLoss, MultiPositiveSigLipLoss

# A contrastive loss scores each image against every text of the batch, so micro-batches would see fewer
# negatives: accumulated gradients would train a different objective, not the recipe's (GradCache would be needed).
ONE_BATCH = (
    "gradient accumulation is not offered for the encoder: its contrastive loss needs the whole batch's negatives "
    "at once, so micro-batches would change what it learns; lower train.batch_size in the recipe instead"
)


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
    save_for_transformers(tok, folder, recipe["model_cfg"]["text_cfg"]["context_length"], SPECIAL_ROLES)


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
        summary = "A CLIP trained by triptych on the shapes world (world.md): zero-shot classification there."
        write_card(tmp, "clip", name=out.name, summary=summary, datasets=[WORLD_DATASET], keep_from=current_card(out))


class WorldBatches:
    """Contrastive batch k, drawn from a generator seeded by (seed, rank, k): (B, 3, S, S) uint8 images,
    T prompts, and the (B, T) match matrix [image i satisfies text j]. Served by StepBatches.

    Without hard negatives T = B, one prompt per image. With `hard_negatives` p, T = 2B: each image's prompt is
    followed (with probability p) by a minimal edit of it that the image does not satisfy, else by a prompt of a
    fresh scene. `probe_scenes` of the B scenes are compositional probes (two objects with distinct colours and
    shapes, a pair in one row or column, a pair and a single), each with its own caption and, when there are hard
    negatives, that caption's exact edit (colours swapped, relation inverted, counts swapped); `probe_kinds` weighs
    the kinds (default: equally); `probe_sizes` of the probes name their objects' sizes too (world.md's probe texts
    leave size unsaid, and a stage of those alone measurably taught the encoder to ignore size)."""

    def __init__(
        self,
        seed: int,
        batch_size: int,
        rank: int = 0,
        twins: float = 0.0,
        transform: Callable[[Image.Image], Image.Image] | None = None,
        hard_negatives: float = 0.0,
        probe_scenes: float = 0.0,
        forms: dict[str, float] | None = None,
        probe_kinds: dict[str, float] | None = None,
        probe_sizes: float = 0.0,
    ) -> None:
        self.seed, self.batch_size, self.rank, self.twins, self.transform = seed, batch_size, rank, twins, transform
        self.hard_negatives, self.probe_scenes, self.probe_sizes = hard_negatives, probe_scenes, probe_sizes
        kinds = probe_kinds or dict.fromkeys(EDIT_KINDS, 1.0)
        if not set(kinds) <= set(EDIT_KINDS):
            raise ValueError(
                f"probe_kinds: unknown kinds {sorted(set(kinds) - set(EDIT_KINDS))}; expected {EDIT_KINDS}"
            )
        self.probe_kinds, self.probe_weights = tuple(kinds), tuple(kinds.values())
        self.describe = functools.partial(random_prompt_spec, forms=forms)  # (scene, rng) -> (text, spec)

    def __call__(self, step: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        rng = random.Random(f"clip/{self.seed}/{self.rank}/{step}")
        count = round(self.probe_scenes * self.batch_size)
        scenes = list(itertools.islice(scene_stream(rng, twins=self.twins), self.batch_size - count))
        kinds = rng.choices(self.probe_kinds, weights=self.probe_weights, k=count)
        # (no draw for sizes when the recipe asks for none: older recipes keep their exact batches)
        probes = [
            probe(kind, rng, say_sizes=self.probe_sizes > 0 and rng.random() < self.probe_sizes) for kind in kinds
        ]
        prompts, extra = [], []
        for scene in scenes:
            if not self.hard_negatives:
                prompts.append(self.describe(scene, rng))
                continue
            if rng.random() < self.hard_negatives:
                positive, negative = with_hard_negative(scene, self.describe, rng)
            else:
                positive, negative = self.describe(scene, rng), None
            prompts.append(positive)
            extra.append(negative or self.describe(sample_scene(rng), rng))
        for p in probes:  # a probe's own caption, its exact edit as the hard negative
            prompts.append((p.true, p.true_spec))
            extra.append((p.edit, p.edit_spec))
        scenes += [p.scene for p in probes]
        if self.hard_negatives:
            prompts += extra
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


class ClipLoop(Loop):
    """Contrastive steps: pixels normalised as open_clip's preprocess does, texts tokenized, the CLIP or SigLIP
    loss over the batch's match matrix; the logit scale is clamped to [0, log 100] after each update."""

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        recipe: dict,
        tokenizer: Callable[[list[str]], torch.Tensor],
        ckpt: Path,
        stage: str = "train",
    ) -> None:
        cfg = recipe[stage]
        for name in cfg.get("freeze", ()):  # e.g. "visual": the image tower keeps its weights
            getattr(model, name).requires_grad_(False)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trained, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.98), eps=1e-6
        )
        name = "clip" if stage == "train" else f"clip {stage}"
        super().__init__(accelerator, model, optimizer, ckpt, cfg["steps"], cfg["save_every"], name=name)
        # names this run, so the stage after it can tell its own start from another run's at the same step
        self.state["run"] = uuid.uuid4().hex[:12]
        self.cfg, self.tokenizer, device = cfg, tokenizer, accelerator.device
        self.mean = torch.tensor(recipe["preprocess_cfg"]["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(recipe["preprocess_cfg"]["std"], device=device).view(1, 3, 1, 1)
        loss_fn = MultiPositiveSigLipLoss if recipe["train"]["loss"] == "siglip" else MultiPositiveClipLoss
        self.loss_fn = loss_fn(accelerator.process_index, accelerator.num_processes)

    def loss(self, batch: tuple[torch.Tensor, list[str], torch.Tensor], step: int) -> torch.Tensor:
        images, texts, match = batch  # (B, 3, S, S) uint8, B prompts, (B, B) bool
        device = self.accelerator.device
        images = (images.to(device).float() / 255 - self.mean) / self.std
        tokens = self.tokenizer(texts).to(device)
        with self.accelerator.autocast():
            features = self.wrapped(images, tokens)
            return self.loss_fn(*features, match=match.to(device))

    def resume(self, with_optimizer: bool = True) -> None:
        """A resumed run keeps the id of the run that wrote the checkpoint (a checkpoint from before ids keeps
        the fresh one)."""
        fresh = self.state["run"]
        super().resume(with_optimizer)
        self.state.setdefault("run", fresh)

    def lr(self, step: int, group: dict) -> float:
        return lr_at(step, self.cfg["lr"], self.cfg["warmup_steps"], self.total)

    def after_update(self) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))

    def postfix(self) -> dict[str, str]:
        return {"loss": f"{self.state['loss']:.3f}", "lr": f"{self.optimizer.param_groups[0]['lr']:.1e}"}


BINDING_STAGES = ("binding", "binding_mix")  # probes first (relations need them), then every prompt form again


def run_binding_stage(
    accelerator: Accelerator,
    model: torch.nn.Module,
    recipe: dict,
    stage: str,
    tokenizer: Callable[[list[str]], torch.Tensor],
    workdir: Path,
    origin: str,
    geometry: Callable[[Image.Image], Image.Image] | None,
    resume: bool,
    workers: int,
    stop_after: int | None,
) -> dict | None:
    """One hard-negative stage (`binding`, then `binding_mix`), resumable from workdir/<stage>; a checkpoint
    records the model it started from (`origin`) and a resume from another is refused. Returns the stage's state,
    or None when stopped early."""
    bind = recipe[stage]
    model.requires_grad_(True)  # a previous stage's freeze does not carry over
    loop = ClipLoop(accelerator, model, recipe, tokenizer, workdir / stage / "checkpoint", stage=stage)
    if resume:
        loop.resume()
        if loop.state["step"] and loop.state.get("start") != origin:
            raise ValueError(
                f"{workdir / stage} holds a {stage} run started from {loop.state.get('start', 'another model')}, "
                f"not from {origin}: use another --workdir or --no-resume"
            )
    loop.state["start"] = origin  # saved with every checkpoint
    model.train()
    for name in bind.get("freeze", ()):
        getattr(model, name).eval()
    batches = WorldBatches(
        bind["seed"],
        bind["batch_size"],
        accelerator.process_index,
        bind.get("twins", 0.0),
        geometry,
        hard_negatives=bind.get("hard_negatives", 0.0),
        probe_scenes=bind.get("probe_scenes", 0.0),
        forms=bind.get("prompt_forms"),
        probe_kinds=bind.get("probe_kinds"),
        probe_sizes=bind.get("probe_sizes", 0.0),
    )
    return loop.run(batches, workers, stop_after)


def train(
    recipe: dict,
    out: Path,
    workdir: Path,
    resume: bool = True,
    workers: int = 1,
    stop_after: int | None = None,
    init: str | Path | None = None,
    options: TrainingOptions | None = None,
) -> dict | None:
    """Train (or resume) both stages to the recipe's step counts and export to `out`; returns the training
    record. stop_after: checkpoint and return None once this many steps ran in this call (resume later).
    init: an exported encoder folder to start the binding stage from (the first stage is skipped).
    options: precision and trackers (gradient accumulation is refused: see ONE_BATCH)."""
    cfg = recipe["train"]
    if options is not None and options.gradient_accumulation_steps > 1:
        raise ValueError(ONE_BATCH)
    accelerator = make_accelerator(options, workdir)
    start_tracking(accelerator, "triptych-clip", recipe)
    set_seed(cfg["seed"])
    workdir.mkdir(parents=True, exist_ok=True)
    tok_dir = workdir / "tokenizer"
    if accelerator.is_main_process:
        write_tokenizer(recipe, tok_dir)
    accelerator.wait_for_everyone()
    (tok_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": recipe["model_cfg"]}))
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tok_dir}")

    model = build_model(recipe)
    rank, world = accelerator.process_index, accelerator.num_processes
    # images are rendered at the world's side and resized exactly as inference will (open_clip's eval transform)
    geometry = eval_geometry(recipe)
    states = {}
    if init is None:
        loop = ClipLoop(accelerator, model, recipe, tokenizer, workdir / "checkpoint")
        if resume:
            loop.resume()
        loop.model.train()
        batches = WorldBatches(cfg["seed"], cfg["batch_size"], rank, cfg.get("twins", 0.0), geometry)
        states["train"] = loop.run(batches, workers, stop_after)
        if states["train"] is None:
            return None
    else:
        model.load_state_dict(load_safetensors(Path(init) / "open_clip_model.safetensors"))
        states["train"] = {"init": str(init)}
    if init is not None:  # the folder's weights, by digest: another export at the same path is another start
        origin = f"{init} ({sha256(Path(init) / 'open_clip_model.safetensors')[:16]})"
    else:
        origin = f"stage 1 run {states['train']['run']} at step {states['train']['step']}"
    for stage in BINDING_STAGES:
        if stage not in recipe:
            continue
        if recipe[stage].get("hard_negatives") and cfg["loss"] == "siglip" and world > 1:
            raise ValueError("hard negatives with the SigLIP loss run on one process only")
        states[stage] = run_binding_stage(
            accelerator, model, recipe, stage, tokenizer, workdir, origin, geometry, resume, workers, stop_after
        )
        if states[stage] is None:
            return None
        origin = f"{stage} run {states[stage]['run']} at step {states[stage]['step']}"
    last = states[list(states)[-1]]
    if "step" not in last:
        raise ValueError("--init trains the binding stage; this recipe has none")
    state = {  # every stage together; each one's own in `stages`
        "step": sum(s.get("step", 0) for s in states.values()),
        "elapsed_s": sum(s.get("elapsed_s", 0.0) for s in states.values()),
        "loss": last.get("loss"),
    }
    info = training_record(
        recipe, state, accelerator.device, processes=world, open_clip=open_clip.__version__, stages=states
    )
    if accelerator.is_main_process:
        export_local_dir(model, recipe, tok_dir, out, info)
        accelerator.print(f"wrote {out} after {info['train_seconds']:.0f} s")
    return info


def main(argv: list[str] | None = None) -> None:
    parser = training_parser(
        "python -m triptych.clip.train", __doc__, "weights/recipes/shapes_clip.json", "weights/shapes/clip", "runs/clip"
    )
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--seed", type=int, help="override the recipe's seed")
    parser.add_argument("--loss", choices=("clip", "siglip"), help="override the recipe's loss")
    parser.add_argument("--init", help="an exported encoder folder: run only the binding stage, starting from it")
    args = parser.parse_args(argv)
    recipe = read_recipe(args)
    for key in ("steps", "batch_size", "seed", "loss"):
        if getattr(args, key) is not None:
            recipe["train"][key] = getattr(args, key)
    if recipe["train"]["steps"] <= 0 or recipe["train"]["batch_size"] <= 0:
        parser.error("--steps and --batch-size must be positive")
    if args.gradient_accumulation_steps > 1:
        parser.error(ONE_BATCH)
    train(recipe, **run_options(args), init=args.init)


if __name__ == "__main__":
    main()
