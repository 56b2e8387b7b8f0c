"""Training the generator through accelerate: the VAE, then the prior, then the decoder (which needs the VAE).
Seeded, resumable per model (safetensors checkpoints with optimizer and EMA state), progress bars, sample grids
and metrics written while training.

    python -m triptych.diffusion.train --recipe weights/recipes/shapes_diffusion_grid.json --out my_generator
    python -m triptych.diffusion.train --data my_captioned_images/ --out my_generator   # bring your own data
    python -m triptych.diffusion.train --recipe weights/recipes/shapes_diffusion_tune.json --encoder new_clip/ \
        --init my_pooled_generator --workdir runs/tune --out tuned
        # fine-tune a trained generator (its VAE and grid kept) onto another encoder, e.g. after its binding stage
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import ConfigMixin, DDPMScheduler, ModelMixin, UnCLIPScheduler, VQModel
from diffusers.training_utils import compute_snr
from PIL import Image
from torchvision.utils import make_grid, save_image

from triptych import clip
from triptych.core.checkpoint import export_folder, replace_folder, training_record, write_text_atomic
from triptych.core.errors import WeightsError
from triptych.core.model_card import WORLD_DATASET, current_card, write_card
from triptych.core.training import (
    Loop,
    TrainingOptions,
    log_image,
    lr_at,
    make_accelerator,
    read_recipe,
    run_options,
    start_tracking,
    training_parser,
)
from triptych.core.weights_files import load_safetensors, read_json

from .data import Batch, CaptionedImages, WorldImages
from .decoder import DecoderStage, to_pixels
from .ema import EMA
from .grid import FOLDER as GRID_FOLDER
from .grid import GridProjection, check_against, image_condition, zero_condition
from .loading import CONFIG
from .models import build_prior, build_unet, build_vae, standardize_latents, vae_psnr
from .prior import PriorStage, pad_states, prior_class
from .saving import card_part, write_model_index
from .schedulers import make_scheduler

PARTS = ("vae", "prior", "decoder")


class Run:
    """What every part's training shares: accelerator, encoder, recipe, data and folders."""

    def __init__(
        self,
        recipe: dict,
        workdir: Path,
        data: str | None,
        workers: int,
        resume: bool,
        init: Path | None = None,
        options: TrainingOptions | None = None,
    ) -> None:
        self.recipe, self.workdir, self.data, self.workers, self.resume = recipe, workdir, data, workers, resume
        self.init = init  # a trained generator folder whose weights each part starts from
        self.accelerator = make_accelerator(options, workdir)
        start_tracking(self.accelerator, "triptych-diffusion", recipe)
        self.device = self.accelerator.device
        self.encoder = clip.load(recipe["encoder"], device=self.device, dtype="fp32")
        self.side = recipe["image_size"]
        self.grid: GridProjection | None = None  # the spatial layout's projection, once fitted (fit_grid)

    def conditions(self, images: list) -> torch.Tensor:
        """(B, E) the decoder's condition for training images (diffusion/grid.py)."""
        return image_condition(self.encoder, self.grid, images).clone()  # inference tensor -> autograd-safe

    def zero_condition(self) -> torch.Tensor:
        """(1, E) the all-zero image's condition (the decoder's unconditional half)."""
        return zero_condition(self.encoder, self.grid)

    def batches(self, part: str) -> Callable[[int], Batch]:
        """Batch k of a part's training data: your captioned images, or world scenes."""
        cfg, seed = self.recipe[part], self.recipe["seed"]
        if self.data:
            return CaptionedImages(self.data, seed, cfg["batch_size"], self.side)
        return WorldImages(
            seed, cfg["batch_size"], part, self.accelerator.process_index, self.side, focus=cfg.get("focus")
        )

    def fit(
        self,
        part: str,
        model: torch.nn.Module,
        loss_of: Callable[[torch.nn.Module, Batch, torch.Generator], torch.Tensor],
        sample: Callable[[torch.nn.Module, int, Path], dict[str, float] | None] | None = None,
        stop_after: int | None = None,
    ) -> tuple[torch.nn.Module, dict] | None:
        """Train `model` to the part's step count; returns (the EMA model, or the model without EMA; state),
        or None when stopped early by `stop_after` (run again to resume). `loss_of` gets a CPU generator seeded
        by the step, so a resumed run draws the same noise as an uninterrupted one."""
        loop = PartLoop(self, part, model, loss_of, sample)
        if self.resume:
            loop.resume()
        state = loop.run(self.batches(part), self.workers, stop_after)
        return None if state is None else (loop.ema.model if loop.ema else model, state)


class PartLoop(Loop):
    """One generator part: AdamW with warm-up and cosine (`lr_horizons` extend it), gradients clipped to norm 1,
    an EMA of the weights when the part's recipe sets `ema`, samples every `sample_every` steps."""

    loss_digits = 5
    max_grad_norm = 1.0

    def __init__(
        self,
        run: Run,
        part: str,
        model: torch.nn.Module,
        loss_of: Callable[[torch.nn.Module, Batch, torch.Generator], torch.Tensor],
        sample: Callable[[torch.nn.Module, int, Path], dict[str, float] | None] | None,
    ) -> None:
        cfg = self.cfg = run.recipe[part]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
        for group in optimizer.param_groups:
            group["base_lr"] = cfg["lr"]
        self.ema = EMA(model, cfg["ema"]) if cfg.get("ema") else None
        extra = {"ema": self.ema.model} if self.ema else None
        folder = run.workdir / part
        super().__init__(
            run.accelerator,
            model,
            optimizer,
            folder / "checkpoint",
            cfg["steps"],
            cfg["save_every"],
            name=part,
            prefix=f"{part}: ",
            extra_models=extra,
        )
        self.seed, self.loss_of, self.sampler, self.samples = run.recipe["seed"], loss_of, sample, folder / "samples"

    def resume(self, with_optimizer: bool = True) -> None:
        super().resume(with_optimizer)
        if self.ema:
            self.ema.restart(self.state["step"])

    def loss(self, batch: Batch, step: int) -> torch.Tensor:
        with self.accelerator.autocast():
            # micro-batches of one step (gradient accumulation) draw from streams of their own
            noise = torch.Generator().manual_seed(self.seed * 1_000_003 + step + self.micro * 2**40)
            return self.loss_of(self.wrapped, batch, noise)

    def lr(self, step: int, group: dict) -> float:
        warmup, horizons = self.cfg.get("warmup_steps", 100), self.cfg.get("lr_horizons", ())
        return lr_at(step, group["base_lr"], warmup, self.total, horizons)

    def after_update(self) -> None:
        if self.ema:
            self.ema.update(self.model)

    def sample(self, step: int) -> None:
        if self.sampler and (step == self.total or step % self.cfg["sample_every"] == 0):
            metrics = self.sampler(self.ema.model if self.ema else self.model, step, self.samples)
            grid = self.samples / f"{step:06d}.png"
            if metrics:
                self.accelerator.log({f"{self.name}/{k}": v for k, v in metrics.items()}, step=step)
            if self.accelerator.trackers and grid.is_file():
                with Image.open(grid) as image:
                    log_image(self.accelerator, f"{self.name}/samples", image, step)

    def postfix(self) -> dict[str, str]:
        return {"loss": f"{self.state['loss']:.4f}"}


def check_origin(run: Run) -> None:
    """The work folder belongs to one run: what it started from (`--init`, or nothing) and the encoder it trains on
    are kept in `origin.json`; resuming with others is refused, so finished parts or checkpoints of another run
    are never taken for this one's."""
    origin = {"init": str(run.init) if run.init is not None else None, "encoder": str(run.recipe["encoder"])}
    path = run.workdir / "origin.json"
    used = [p for p in ("finished", *PARTS) if (run.workdir / p).exists()]
    if run.resume and path.is_file():
        saved = json.loads(path.read_text())
        if saved != origin:
            raise ValueError(
                f"{run.workdir} holds a run started from {saved}, not {origin}: use another --workdir or --no-resume"
            )
    elif run.resume and used and run.init is not None:
        raise ValueError(
            f"{run.workdir} holds parts of a run with no record of its start ({', '.join(used)}): "
            "--init needs its own --workdir (or --no-resume)"
        )
    if run.accelerator.is_main_process:
        run.workdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(origin, indent=1))
    run.accelerator.wait_for_everyone()


def start_from(run: Run, model: torch.nn.Module, folder: str) -> None:
    """Load `--init`'s `folder` weights into a freshly built part (before any checkpoint is resumed, which wins);
    the architectures must match: the recipe's model section is the init's."""
    if run.init is None:
        return
    state = load_safetensors(run.init / folder / "diffusion_pytorch_model.safetensors")
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise WeightsError(
            f"--init {run.init}: {folder}/ does not fit the recipe's {folder} model ({str(err).splitlines()[0]}); "
            "train with the recipe the init folder was trained with"
        ) from err


# ---------------------------------------------------------------------- the three parts
def train_vae(run: Run, stop_after: int | None = None) -> tuple[VQModel, dict] | None:
    """Reconstruction (MSE + L1) with a light latent-size penalty; latents standardised at the end."""
    cfg = run.recipe["vae"]
    set_seed(run.recipe["seed"])  # each part seeds its own initialisation: parts may run in separate calls
    vae = build_vae(cfg["model"]).to(run.device)
    fixed = to_pixels(WorldImages(run.recipe["seed"] + 1, 16, "vae-samples", side=run.side)(0)[0], run.device)

    def loss_of(model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        pixels = to_pixels(batch[0], run.device)
        latents = model.encode(pixels).latents
        recon = model.decode(latents, force_not_quantize=True).sample
        penalty = cfg.get("latent_penalty", 0.0) * latents.square().mean()
        return F.mse_loss(recon, pixels) + 0.5 * F.l1_loss(recon, pixels) + penalty

    def sample(model: torch.nn.Module, step: int, folder: Path) -> None:
        with torch.no_grad():
            recon = model.decode(model.encode(fixed).latents, force_not_quantize=True).sample
        _save_grid(torch.cat([fixed, recon]), folder / f"{step:06d}.png", rows=2)

    done = run.fit("vae", vae, loss_of, sample, stop_after)
    if done is None:
        return None
    vae, state = done
    stats = WorldImages(run.recipe["seed"] + 2, cfg.get("stats_samples", 512), "vae-stats", side=run.side)(0)[0]
    pixels = to_pixels(stats, run.device)
    mean, std = standardize_latents(vae.float(), pixels)
    state["latent_mean"], state["latent_std"] = mean.tolist(), std.tolist()
    state["psnr_db"] = round(vae_psnr(vae, pixels), 2)
    return vae, state


def train_prior(run: Run, stop_after: int | None = None):
    """x0-prediction of the standardised image embedding from noisy versions, conditioned on the prompt's
    embedding and token states; the prompt is dropped to "" with probability cond_drop (guidance)."""
    cfg, enc = run.recipe["prior"], run.encoder
    set_seed(run.recipe["seed"] + 1)
    prior = build_prior(cfg["model"], enc, run.grid.dim if run.grid else 0).to(run.device)
    start_from(run, prior, "prior")  # its embedding statistics are refitted below, on this encoder
    scheduler = UnCLIPScheduler(**cfg["scheduler"])
    images = WorldImages(run.recipe["seed"] + 3, cfg.get("stats_samples", 4096), "prior-stats", side=run.side)(0)[0]
    embeds = torch.cat([run.conditions(images[i : i + 512]) for i in range(0, len(images), 512)])  # (N, E)
    prior.clip_mean.data.copy_(embeds.mean(0, keepdim=True))
    prior.clip_std.data.copy_(embeds.std(0, keepdim=True))
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    normalize_text = cfg.get("normalize_text", False)  # unit-length text embeddings in, or raw (Kandinsky)
    fixed_images, fixed_prompts = WorldImages(run.recipe["seed"] + 4, 64, "prior-samples", side=run.side)(0)

    def loss_of(model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        images, prompts = batch
        drop = torch.rand(len(prompts), generator=gen) < cfg["cond_drop"]
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        # inference tensors: cloned before autograd sees them
        text = enc.text_states(prompts, allow_empty=True, normalize=normalize_text)
        embeds, states = text.embeds.clone(), pad_states(text.states, prior.config).clone()
        target = (run.conditions(images) - prior.clip_mean) / prior.clip_std  # (B, E)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(images),), generator=gen).to(run.device)
        noisy = scheduler.add_noise(target, torch.randn(target.shape, generator=gen).to(run.device), t)
        pred = model(
            noisy, t, proj_embedding=embeds, encoder_hidden_states=states, attention_mask=text.mask.clone()
        ).predicted_image_embedding
        return F.mse_loss(pred, target)

    def sample(model: torch.nn.Module, step: int, folder: Path) -> dict[str, float]:
        stage = PriorStage(model, UnCLIPScheduler(**cfg["scheduler"]), enc, normalize_text)
        stage.zero_condition = run.zero_condition
        gen = torch.Generator().manual_seed(0)
        drawn, _ = stage(fixed_prompts, steps=cfg.get("sample_steps", 25), generator=gen, progress=False)
        true = enc.encode_image(fixed_images)
        cos = F.cosine_similarity(F.normalize(drawn[:, : enc.embed_dim].float(), dim=-1), true).mean().item()
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "cosine_to_true_image": round(cos, 4)}) + "\n")
        model.train()
        return {"cosine_to_true_image": cos}

    done = run.fit("prior", prior, loss_of, sample, stop_after)
    return None if done is None else (done[0], done[1], scheduler)


def train_decoder(run: Run, vae: VQModel, stop_after: int | None = None):
    """Noise prediction on standardised VAE latents, conditioned on the image's own embedding; the condition is
    replaced by the zero image's embedding with probability cond_drop (guidance, as Kandinsky's negative).
    Optional min-SNR-gamma loss weighting (`snr_gamma`)."""
    cfg, enc = run.recipe["decoder"], run.encoder
    vae = vae.to(run.device).eval().requires_grad_(False)
    latent_side = run.side // 2 ** (len(vae.config.block_out_channels) - 1)
    set_seed(run.recipe["seed"] + 2)
    grid_channels = run.grid.channels if run.grid else 0
    unet = build_unet(cfg["model"], enc.embed_dim, vae.config.latent_channels, latent_side, grid_channels)
    start_from(run, unet, "unet")
    unet = unet.to(run.device)
    scheduler = DDPMScheduler(**cfg["scheduler"])
    zero = run.zero_condition()  # (1, E)
    fixed = WorldImages(run.recipe["seed"] + 6, 8, "decoder-samples", side=run.side)(0)[0]
    layout = DecoderStage(unet, vae, scheduler, grid=run.grid)  # splits conditions as inference will
    unet.train()  # DecoderStage puts its UNet in eval mode

    def loss_of(model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> torch.Tensor:
        images = batch[0]
        with torch.no_grad():
            latents = vae.encode(to_pixels(images, run.device)).latents  # (B, C, h, w)
            cond = run.conditions(images)  # (B, E)
        drop = (torch.rand(len(images), generator=gen) < cfg["cond_drop"]).to(run.device)
        cond = torch.where(drop[:, None], zero.expand_as(cond), cond)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(images),), generator=gen).to(run.device)
        noise = torch.randn(latents.shape, generator=gen).to(run.device)
        sample = scheduler.add_noise(latents, noise, t)  # (B, C, h, w)
        embeds, grid_map = layout.split(cond, latents.shape[-2:])
        if grid_map is not None:
            sample = torch.cat([sample, grid_map], dim=1)  # (B, C + G, h, w)
        out = model(sample, t, None, added_cond_kwargs={"image_embeds": embeds}).sample
        per_sample = (out[:, : latents.shape[1]] - noise).square().mean(dim=(1, 2, 3))  # (B,)
        gamma = cfg.get("snr_gamma")
        if gamma:  # min-SNR-gamma weighting (Hang et al. 2023): easy low-noise steps stop dominating
            snr = compute_snr(scheduler, t)
            per_sample = per_sample * snr.clamp(max=gamma) / snr
        return per_sample.mean()

    def sample(model: torch.nn.Module, step: int, folder: Path) -> None:
        stage = DecoderStage(model, vae, make_scheduler("ddim", scheduler.config), grid=run.grid)
        embeds = run.conditions(fixed)
        seed = torch.Generator().manual_seed(0)
        steps = cfg.get("sample_steps", 25)
        latents = stage(
            embeds, zero.expand_as(embeds), height=run.side, width=run.side, steps=steps, generator=seed, progress=False
        )
        originals = to_pixels(fixed, run.device) * 0.5 + 0.5
        _save_grid(torch.cat([originals, stage.decode(latents)]), folder / f"{step:06d}.png", rows=2, unit=True)
        model.train()

    done = run.fit("decoder", unet, loss_of, sample, stop_after)
    return None if done is None else (done[0], done[1], scheduler)


# ---------------------------------------------------------------------- helpers and entry point
def _save_grid(pixels: torch.Tensor, path: Path, rows: int, unit: bool = False) -> None:
    """Save (N, 3, H, W) images, N/rows per row; pixels in [-1, 1] (or [0, 1] with unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = pixels.float().cpu() if unit else (pixels.float().cpu() * 0.5 + 0.5)
    save_image(make_grid(images.clamp(0, 1), nrow=len(pixels) // rows, padding=1), str(path))


def train(
    recipe: dict,
    out: Path,
    workdir: Path,
    resume: bool = True,
    workers: int = 1,
    stop_after: int | None = None,
    data: str | None = None,
    parts: Sequence[str] = PARTS,
    init: str | Path | None = None,
    options: TrainingOptions | None = None,
) -> dict | None:
    """Train the VAE, the prior and the decoder in turn (each resumes from its own checkpoint, and a finished part
    is not retrained), then write the generator folder to `out`. Returns the training record, or None when
    `stop_after` stopped a part early or a part outside `parts` is not finished yet (`parts` lets the decoder,
    which needs only the image tower, train while the text tower is still changing). `init`: a trained generator
    folder: its VAE and grid projection are kept as they are, and the prior and the decoder start from its weights
    (a fine-tune)."""
    set_seed(recipe["seed"])
    run = Run(recipe, workdir, data, workers, resume, Path(init) if init is not None else None, options)
    check_origin(run)
    check_init_layout(run)
    finished = workdir / "finished"
    record: dict = {}
    if resume and (finished / "vae.json").is_file():
        vae = VQModel.from_pretrained(finished / "movq", use_safetensors=True).to(run.device)
        record["vae"] = json.loads((finished / "vae.json").read_text())
    elif run.init is not None:  # the init's VAE, as trained: latents keep their statistics
        vae = VQModel.from_pretrained(run.init / "movq", use_safetensors=True).to(run.device).float()
        trained = read_json(run.init / "training.json").get("parts", {}).get("vae")
        if not isinstance(trained, dict):
            raise WeightsError(f"--init {run.init}: training.json has no record of its VAE (parts.vae)")
        # not trained in this run: no steps or seconds counted, the init's record kept beside
        record["vae"] = {"step": 0, "elapsed_s": 0.0, "init": str(run.init), "from_init": trained}
        finish_part(run.accelerator, finished, "vae", record["vae"], {"movq": vae})
    else:
        done = train_vae(run, stop_after)
        if done is None:
            return None
        vae, record["vae"] = done
        finish_part(run.accelerator, finished, "vae", record["vae"], {"movq": vae})
    run.grid = fit_grid(run, finished)
    for part, fn, folder, sched_folder in (
        ("prior", lambda: train_prior(run, stop_after), "prior", "prior_scheduler"),
        ("decoder", lambda: train_decoder(run, vae, stop_after), "unet", "scheduler"),
    ):
        if resume and (finished / f"{part}.json").is_file():
            record[part] = json.loads((finished / f"{part}.json").read_text())
            continue
        if part not in parts:
            continue
        done = fn()
        if done is None:
            return None
        model, record[part], scheduler = done
        finish_part(run.accelerator, finished, part, record[part], {folder: model, sched_folder: scheduler})
    if set(record) != set(PARTS):
        return None  # a part left for another call
    total = {"step": sum(record[p]["step"] for p in PARTS), "elapsed_s": sum(record[p]["elapsed_s"] for p in PARTS)}
    extra = {"init": str(init)} if init is not None else {}
    info = training_record(recipe, total, run.device, data=data or "shapes world", parts=record, **extra)
    if run.accelerator.is_main_process:
        export(finished, out, recipe, info, grid=run.grid is not None)
    return info


def check_init_layout(run: Run) -> None:
    """WeightsError before anything is written unless `--init` is in the recipe's layout: a grid/ folder exactly
    when the recipe's decoder reads a grid (`decoder.grid_channels` > 0)."""
    if run.init is None:
        return
    spatial = bool(run.recipe["decoder"].get("grid_channels", 0))
    if (run.init / GRID_FOLDER).is_dir() != spatial:
        have, want = ("no grid/", "the spatial layout (a grid)") if spatial else ("grid/", "the pooled layout")
        raise WeightsError(
            f"--init {run.init}: has {have}, the recipe trains {want}; "
            "train with the recipe the init folder was trained with"
        )


def fit_grid(run: Run, finished: Path) -> GridProjection | None:
    """The spatial layout's projection (recipe `decoder.grid_channels`): fitted once on the patch tokens of
    `grid_samples` world images and kept in `finished/grid`, so the prior and the decoder read the same one.
    A fine-tune (`--init`) keeps the init's projection: its models were trained on it, and a refit need not
    reproduce it (a principal direction's sign is arbitrary). On another encoder of the same token shape (e.g. the
    binding stage's fine-tune of it) the kept projection still maps tokens near the old ones near the old channels;
    a refit would reorder them."""
    channels = run.recipe["decoder"].get("grid_channels", 0)
    if not channels:
        return None
    folder = finished / GRID_FOLDER
    if run.resume and (folder / "grid_projection.safetensors").is_file():
        grid = GridProjection.from_pretrained(folder)
        if grid is not None and grid.channels == channels:
            return grid
    if run.init is not None:
        grid = GridProjection.from_pretrained(run.init / GRID_FOLDER)
        assert grid is not None  # check_init_layout: the init is in the recipe's layout
        if grid.channels != channels:
            raise WeightsError(
                f"--init {run.init}: its grid/ has {grid.channels} channels, the recipe's decoder reads {channels}; "
                "train with the recipe the init folder was trained with"
            )
        try:
            check_against(grid, run.encoder)
        except WeightsError as err:
            raise WeightsError(f"--init {run.init}: {err}") from None
    else:
        count = run.recipe["decoder"].get("grid_samples", 2048)
        images = WorldImages(run.recipe["seed"] + 7, count, "grid-stats", side=run.side)(0)[0]
        tokens = torch.cat(
            [run.encoder.patch_tokens(images[i : i + 512]) for i in range(0, count, 512)]
        )  # (N, cells, W)
        grid = GridProjection.fit(tokens, channels)
    if run.accelerator.is_main_process:
        with replace_folder(folder) as tmp:
            grid.save(tmp)
    run.accelerator.wait_for_everyone()
    return GridProjection.from_pretrained(folder)  # every process reads the one the main process wrote


def finish_part(
    accelerator: Accelerator, finished: Path, part: str, record: dict, saved: dict[str, ModelMixin | ConfigMixin]
) -> None:
    """Write a trained part to `finished`: its marker `<part>.json` is removed, each folder is switched in whole,
    and the marker (the part's record) is written strictly last, so a crash leaves the part unfinished and the next
    run redoes it from its checkpoint (never pairing a new model with an old record)."""
    if accelerator.is_main_process:
        marker = finished / f"{part}.json"
        marker.unlink(missing_ok=True)
        for folder, model in saved.items():
            with replace_folder(finished / folder) as tmp:
                model.save_pretrained(tmp)
        write_text_atomic(marker, json.dumps(record, indent=1))
    accelerator.wait_for_everyone()


def export(finished: Path, out: Path, recipe: dict, info: dict, grid: bool = False) -> None:
    """The generator folder: fp16 safetensors per model in diffusers' layout, generator.json, training.json,
    manifest; switched into `out` whole (a crash keeps the previous export)."""
    from diffusers import UNet2DConditionModel

    config = {
        "encoder": recipe["encoder"],
        "image_size": recipe["image_size"],
        "prior_normalize_text": recipe["prior"].get("normalize_text", False),
        "defaults": recipe["defaults"],
    }
    with export_folder(out) as tmp:
        prior = prior_class(finished / "prior")  # a PriorTransformer, or the spatial layout's cell prior
        for folder, cls in (("movq", VQModel), ("prior", prior), ("unet", UNet2DConditionModel)):
            model = cls.from_pretrained(finished / folder, use_safetensors=True, torch_dtype=torch.float16)
            model.save_pretrained(tmp / folder, safe_serialization=True)
        if grid:  # the spatial layout; a pooled export never carries one (export_folder keeps no old folders)
            shutil.copytree(finished / GRID_FOLDER, tmp / GRID_FOLDER)
        for folder in ("scheduler", "prior_scheduler"):
            (tmp / folder).mkdir()
            scheduler = json.loads((finished / folder / "scheduler_config.json").read_text())
            (tmp / folder / "scheduler_config.json").write_text(json.dumps(scheduler, indent=1) + "\n")
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n")
        write_model_index(tmp)  # diffusers opens the decoder half (pooled layout only)
        world = info.get("data", "shapes world") == "shapes world"
        source = "the shapes world" if world else info["data"]
        summary = (
            f"An unCLIP text-to-image generator trained by triptych on {source}, on the encoder {config['encoder']}."
        )
        datasets = [WORLD_DATASET] if world else None
        write_card(tmp, card_part(grid), name=out.name, summary=summary, datasets=datasets, keep_from=current_card(out))


def main(argv: list[str] | None = None) -> None:
    parser = training_parser(
        "python -m triptych.diffusion.train",
        __doc__,
        "weights/recipes/shapes_diffusion_grid.json",  # the bundled layout: grid decoder, cell prior
        "weights/shapes/diffusion",
        "runs/diffusion",
        encoder_option=True,
    )
    parser.add_argument("--data", help="a folder of images with same-named .txt captions")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="train only these parts now (resume the rest later)"
    )
    parser.add_argument("--init", help="a trained generator folder to fine-tune from (its VAE and grid kept)")
    args = parser.parse_args(argv)
    recipe = read_recipe(args)
    if "fine_tunes" in recipe and not args.init:
        parser.error(f"{args.recipe} fine-tunes a trained generator: pass --init FOLDER ({recipe['fine_tunes']})")
    info = train(recipe, **run_options(args), data=args.data, parts=args.parts, init=args.init)
    if info:
        print(f"trained in {info['train_seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
