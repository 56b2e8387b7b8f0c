"""Generator benchmark: our decoder loop vs diffusers' KandinskyV22Pipeline on the same UNet, VAE, scheduler and
image embeddings (seconds per image at equal steps), and DPM-Solver++ at few steps vs DDIM-50 (time and score).

A spatial-layout decoder (diffusion/grid.py) reads the grid map as extra UNet input channels, which
KandinskyV22Pipeline cannot feed. Its loop-vs-diffusers rows therefore time a pooled-layout twin: the same UNet
config with in_channels = the latent channels (random weights, same dtype and device), run by the pipeline and by
a grid-less DecoderStage with the same VAE and scheduler from the conditions' pooled embeddings, so both do the
same work; a separate row times the real grid decoder (the cost of the grid's input channels).
"""

from __future__ import annotations

import statistics

import torch
from diffusers import KandinskyV22Pipeline, UNet2DConditionModel

from triptych import clip, diffusion
from triptych.apps.evaluation.generator import evaluate_generator
from triptych.diffusion.decoder import DecoderStage
from triptych.diffusion.schedulers import make_scheduler

from .timing import timed


def pooled_twin(decoder: DecoderStage, seed: int = 0) -> DecoderStage:
    """A pooled-layout DecoderStage doing the grid decoder's work minus the grid: a randomly initialised UNet of the
    same config but in_channels = the latent channels (same dtype and device), the same VAE and scheduler."""
    unet = decoder.unet
    config = {**unet.config, "in_channels": decoder.latent_channels}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = UNet2DConditionModel.from_config(config)
    # torch's own to(): diffusers' (0.42) warns of modules to keep in float32 even when, as here, there are none
    torch.nn.Module.to(twin, device=unet.device, dtype=unet.dtype)
    return DecoderStage(twin, decoder.movq, decoder.scheduler, device=decoder.device)


def benchmark_generator(
    model: str,
    encoder_name: str | None,
    batch_size: int,
    step_counts: tuple[int, ...],
    fast_steps: tuple[int, ...],
    score_count: int,
    repeats: int,
    device: str | None,
    dtype: str | None,
) -> list[tuple[str, str]]:
    """Rows of (what, result)."""
    encoder = clip.load(encoder_name, device=device, dtype=dtype) if encoder_name else None
    gen = diffusion.load(model, encoder=encoder, device=device, dtype=dtype)
    dev, size, guidance = gen.encoder.device, gen.image_size, gen.defaults.guidance
    prompts = [f"a {c} circle in the center" for c in ("red", "blue", "green", "yellow")] * (batch_size // 4 + 1)
    embeds, negative = gen.prior(prompts[:batch_size], generator=torch.Generator().manual_seed(0), progress=False)
    config = dict(gen.decoder.scheduler.config)
    rows = [("device / dtype / batch", f"{dev} / {str(gen.encoder.dtype).removeprefix('torch.')} / {batch_size}")]
    grid = gen.decoder.grid
    if grid is None:  # the pipeline runs our UNet as it is
        stage, pooled, pooled_negative = gen.decoder, embeds, negative
    else:  # it cannot feed the grid map: compare on a pooled twin, and time the real grid decoder on its own row
        stage = pooled_twin(gen.decoder)
        d = gen.decoder.embed_dim
        pooled, pooled_negative = embeds[:, :d], negative[:, :d]
        rows.append(
            (
                "decoder layout",
                f"spatial grid ({grid.cells} cells x {grid.channels} channels): the pipeline and triptych decoder "
                f"rows run a pooled twin UNet (in_channels {stage.latent_channels}, not "
                f"{gen.decoder.unet.config.in_channels}; random weights), the grid decoder rows the real one",
            )
        )

    def run(decoder: DecoderStage, image_embeds: torch.Tensor, negative_embeds: torch.Tensor, steps: int) -> None:
        latents = decoder(
            image_embeds,
            negative_embeds,
            height=size,
            width=size,
            steps=steps,
            guidance=guidance,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )
        decoder.decode(latents).cpu()

    for steps in step_counts:
        gen.decoder.scheduler = make_scheduler("ddim", config)
        stage.scheduler = make_scheduler("ddim", config)
        pipe = KandinskyV22Pipeline(unet=stage.unet, scheduler=make_scheduler("ddim", config), movq=stage.movq)
        pipe.set_progress_bar_config(disable=True)

        def ours(steps: int = steps) -> None:
            run(stage, pooled, pooled_negative, steps)

        def theirs(pipe: KandinskyV22Pipeline = pipe, steps: int = steps) -> None:
            pipe(
                image_embeds=pooled,
                negative_image_embeds=pooled_negative,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(0),
                output_type="pt",
            )

        ours()  # warm-up
        theirs()
        t_ours = statistics.median(timed(ours, repeats, dev)) / batch_size
        t_theirs = statistics.median(timed(theirs, repeats, dev)) / batch_size
        rows.append((f"DDIM {steps} steps: KandinskyV22Pipeline s/image", f"{t_theirs:.4f}"))
        rows.append(
            (f"DDIM {steps} steps: triptych decoder s/image", f"{t_ours:.4f} ({t_ours / t_theirs:.2f}x the time)")
        )
        if grid is not None:

            def ours_grid(steps: int = steps) -> None:
                run(gen.decoder, embeds, negative, steps)

            ours_grid()  # warm-up
            t_grid = statistics.median(timed(ours_grid, repeats, dev)) / batch_size
            rows.append(
                (
                    f"DDIM {steps} steps: triptych grid decoder (+{grid.channels} input channels) s/image",
                    f"{t_grid:.4f} ({t_grid / t_ours:.2f}x the pooled twin's time)",
                )
            )
    full = timed(lambda: gen.generate(prompts[:batch_size], progress=False), 1, dev)[0] / batch_size
    rows.append(
        (f"full generate (prior {gen.defaults.prior_steps} + decoder {gen.defaults.steps}) s/image", f"{full:.4f}")
    )
    if score_count:
        for name, steps in [("ddim", 50), *(("dpm++", s) for s in fast_steps)]:
            t = timed(
                lambda n=name, k=steps: gen.generate(prompts[:batch_size], scheduler=n, steps=k, progress=False), 1, dev
            )
            scores = evaluate_generator(
                gen, count=score_count, images_per_prompt=2, vae_count=0, scheduler=name, steps=steps
            )
            rows.append(
                (
                    f"{name} {steps} steps: s/image, GenEval overall",
                    f"{t[0] / batch_size:.4f}, {scores['in_distribution']['overall']:.3f}",
                )
            )
    return rows
