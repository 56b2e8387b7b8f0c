"""Generator benchmark: our decoder loop vs diffusers' KandinskyV22Pipeline on the same UNet, VAE, scheduler and
image embeddings (seconds per image at equal steps), and DPM-Solver++ at few steps vs DDIM-50 (time and score)."""

from __future__ import annotations

import statistics

import torch
from diffusers import KandinskyV22Pipeline

from triptych import clip, diffusion
from triptych.apps.evaluation.generator import evaluate_generator
from triptych.diffusion.schedulers import make_scheduler

from .timing import timed


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
    for steps in step_counts:
        gen.decoder.scheduler = make_scheduler("ddim", config)
        pipe = KandinskyV22Pipeline(
            unet=gen.decoder.unet, scheduler=make_scheduler("ddim", config), movq=gen.decoder.movq
        )
        pipe.set_progress_bar_config(disable=True)

        def ours(steps: int = steps) -> None:
            latents = gen.decoder(
                embeds,
                negative,
                height=size,
                width=size,
                steps=steps,
                guidance=guidance,
                generator=torch.Generator().manual_seed(0),
                progress=False,
            )
            gen.decoder.decode(latents).cpu()

        def theirs(pipe: KandinskyV22Pipeline = pipe, steps: int = steps) -> None:
            pipe(
                image_embeds=embeds,
                negative_image_embeds=negative,
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
