"""Score a generator the GenEval way: generate from fresh prompts, parse every image back into objects with the
world's image parser, and count a prompt's image as passing only on an exact match. Also VAE reconstruction
PSNR on fresh scenes, and a CLIP score (100 x cosine between the generated image and its prompt)."""

from __future__ import annotations

import random

from tqdm.auto import tqdm

from triptych.diffusion.decoder import to_pixels
from triptych.diffusion.models import vae_psnr
from triptych.world import GENEVAL_CATEGORIES, HELD_OUT_CATEGORIES, geneval_prompt, parse_image, render, sample_scene


def geneval_scores(
    generator, prompts: list[str], specs: list, images_per_prompt: int, seed: int, batch_prompts: int, **settings
) -> tuple[float, float]:
    """(pass rate over every image, mean CLIP score) for prompts with their PromptSpecs."""
    passed, clip_scores = 0, []
    for i in range(0, len(prompts), batch_prompts):
        chunk = prompts[i : i + batch_prompts]
        images = generator.generate(
            chunk, seed=seed + i, num_images=images_per_prompt, progress=False, **settings
        )  # prompt-major
        for j, image in enumerate(images):
            passed += specs[i + j // images_per_prompt].satisfied_by(parse_image(image))
        text = generator.encoder.encode_text(chunk).repeat_interleave(images_per_prompt, dim=0)
        clip_scores += (100 * (generator.encoder.encode_image(images) * text).sum(-1).clamp(min=0)).tolist()
    return passed / (len(prompts) * images_per_prompt), sum(clip_scores) / len(clip_scores)


def reconstruction_psnr(generator, count: int, seed: int) -> float:
    """Mean PSNR (dB) of the generator's VAE on `count` fresh scenes."""
    rng = random.Random(f"{seed}/vae")
    total = 0.0
    for i in range(0, count, 64):
        images = [render(sample_scene(rng)) for _ in range(min(64, count - i))]
        total += vae_psnr(generator.decoder.movq, to_pixels(images, generator.decoder.movq.device)) * len(images)
    return total / count


def decoder_recovery(generator, count: int = 64, seed: int = 1234, **settings) -> dict[str, float]:
    """The decoder alone, from the *true* conditions of `count` fresh scenes (their own image embeddings, and grid
    in the spatial layout), parsed back: the fraction of objects drawn exactly (size, colour, shape, cell) and of
    scenes drawn exactly (nothing missing, nothing extra). The prior is not involved: this is what the decoder
    has learnt."""
    rng = random.Random(f"{seed}/recovery")
    scenes = [sample_scene(rng) for _ in range(count)]
    drawn = []
    for i in range(0, count, 16):
        chunk = [render(s) for s in scenes[i : i + 16]]
        drawn += generator.decode_embeddings(generator.image_condition(chunk), seed=seed + i, **settings)
    found = [parse_image(image).keys() for image in drawn]
    objects = sum(len(s.keys() & f) for s, f in zip(scenes, found)) / sum(len(s.objects) for s in scenes)
    return {"objects_recovered": objects, "scenes_exact": sum(s.keys() == f for s, f in zip(scenes, found)) / count}


def evaluate_generator(
    generator,
    count: int = 50,
    images_per_prompt: int = 4,
    seed: int = 1234,
    batch_prompts: int = 16,
    vae_count: int = 500,
    recovery_count: int = 64,
    **settings,
) -> dict:
    """{"in_distribution": {category: score, ..., overall, clip_score, vae_psnr_db, decoder_objects_recovered,
    decoder_scenes_exact}, "held_out": {...}}: `count` fresh prompts per category, `images_per_prompt` images
    each; PSNR over `vae_count` scenes, the decoder's recovery from true conditions over `recovery_count` (0: skip)."""
    results: dict[str, dict[str, float]] = {"in_distribution": {}, "held_out": {}}
    for split in ("in_distribution", "held_out"):
        categories = GENEVAL_CATEGORIES if split == "in_distribution" else HELD_OUT_CATEGORIES
        held, clip_scores = split == "held_out", []
        for category in tqdm(categories, desc=f"geneval {split}", leave=False):
            rng = random.Random(f"{seed}/geneval/{split}/{category}")
            pairs = [geneval_prompt(category, rng, held_out=held) for _ in range(count)]
            score, clip_score = geneval_scores(
                generator,
                [p for p, _ in pairs],
                [s for _, s in pairs],
                images_per_prompt,
                seed,
                batch_prompts,
                **settings,
            )
            results[split][category] = score
            clip_scores.append(clip_score)
        results[split]["overall"] = sum(results[split][c] for c in categories) / len(categories)
        results[split]["clip_score"] = sum(clip_scores) / len(clip_scores)
    if vae_count:
        results["in_distribution"]["vae_psnr_db"] = reconstruction_psnr(generator, vae_count, seed)
    if recovery_count:
        decoder_only = {k: v for k, v in settings.items() if k in ("steps", "guidance", "scheduler")}
        recovery = decoder_recovery(generator, recovery_count, seed, **decoder_only)
        results["in_distribution"].update({f"decoder_{k}": v for k, v in recovery.items()})
    return results
