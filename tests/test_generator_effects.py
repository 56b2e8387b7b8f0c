"""Honest generator tests: the GenEval plumbing scored against an oracle, and the effects (not the counts) of
negative prompts, interpolation weights and variation inputs on a tiny trained generator, in both decoder layouts.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_diffusion import pooled, tiny_recipe
from tests.tiny_models import make_tiny_encoder_dir
from triptych import clip, diffusion
from triptych.apps.evaluation.generator import evaluate_generator
from triptych.diffusion.train import train
from triptych.world import (
    BACKGROUNDS,
    COLORS,
    GENEVAL_CATEGORIES,
    HELD_OUT_CATEGORIES,
    HELD_OUT_PAIRS,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    ObjectSpec,
    PromptSpec,
    Scene,
    SceneObject,
    geneval_prompt,
    parse_image,
    plural,
    relation,
    render,
    sample_scene,
)
from triptych.world.spec import DEFAULT_SIDE, GRID, max_jitter
from triptych.world.text import RELATIONS


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return str(make_tiny_encoder_dir(tmp_path_factory.mktemp("effects_enc")))


# ---------------------------------------------------------------------- an oracle for the GenEval plumbing
def _alternatives(values) -> str:
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


_OBJECT = re.compile(
    rf"a (?:(?P<size>{_alternatives(SIZES)}) )?(?:(?P<color>{_alternatives(COLORS)}) )?"
    rf"(?P<shape>{_alternatives(SHAPES)})(?: in the (?P<position>{_alternatives(POSITIONS)}))?"
)


def _read_object(text: str) -> ObjectSpec:
    m = _OBJECT.fullmatch(text)
    assert m, f"not an object phrase: {text!r}"
    cell = POSITIONS.index(m["position"]) if m["position"] else None
    return ObjectSpec(shape=m["shape"], color=m["color"], size=m["size"], cell=cell)


def read_prompt(text: str) -> PromptSpec:
    """What a GenEval prompt asks for, read from its text alone (the grammar of world/prompts.py)."""
    background = None
    m = re.fullmatch(rf"(.*) on a ({_alternatives(BACKGROUNDS)}) background", text)
    if m:
        text, background = m[1], m[2]
    m = re.fullmatch(rf"({_alternatives(NUMBER_WORDS)}) (\w+)", text)
    if m:
        shape = next(s for s in SHAPES if plural(s) == m[2])
        return PromptSpec(
            "count", (ObjectSpec(shape=shape),), count=NUMBER_WORDS.index(m[1]) + 1, background=background
        )
    for rel in RELATIONS:
        if f" {rel} " in text:
            a, b = text.split(f" {rel} ")
            return PromptSpec("relation", (_read_object(a), _read_object(b)), rel, background=background, exact=True)
    return PromptSpec("objects", tuple(_read_object(p) for p in text.split(" and ")), background=background)


def scene_for(spec: PromptSpec, rng: random.Random) -> Scene:
    """A scene that satisfies `spec`, built from it: the named attributes, the free ones drawn at random, the
    named cells, for a relation two cells that stand in it, distinct random cells otherwise, a random jitter."""
    wanted = spec.objects * spec.count if spec.kind == "count" else spec.objects
    if spec.kind == "relation":
        pairs = [
            (a, b)
            for a in range(GRID * GRID)
            for b in range(GRID * GRID)
            if a != b
            and relation(SceneObject("small", "red", "circle", a), SceneObject("small", "red", "circle", b))
            == spec.relation
        ]
        cells = list(rng.choice(pairs))
    else:
        named = [o.cell for o in wanted if o.cell is not None]
        free = rng.sample([c for c in range(GRID * GRID) if c not in named], len(wanted) - len(named))
        cells = [o.cell if o.cell is not None else free.pop() for o in wanted]
    j = max_jitter(DEFAULT_SIDE)
    objects = tuple(
        SceneObject(
            o.size or rng.choice(SIZES),
            o.color or rng.choice(tuple(COLORS)),
            o.shape or rng.choice(SHAPES),
            cell,
            rng.randint(-j, j),
            rng.randint(-j, j),
        )
        for o, cell in zip(wanted, cells)
    )
    scene = Scene(objects, spec.background or rng.choice(tuple(BACKGROUNDS)))
    assert spec.satisfied_by(scene), (spec, scene)
    return scene


class StandIn:
    """A generator that sees only the prompt text, as a real one does. `draws` says, per image index within a
    prompt, whether to render a scene the prompt describes (True) or a blank canvas (False)."""

    def __init__(self, encoder: clip.Encoder, draws: tuple[bool, ...]) -> None:
        self.encoder, self.draws, self.calls = encoder, draws, []

    def generate(self, prompts, seed=None, num_images=None, progress=True, **settings):
        self.calls.append(
            {"prompts": list(prompts), "seed": seed, "num_images": num_images, "progress": progress, **settings}
        )
        images = []
        for prompt in prompts:  # prompt-major, as UnCLIPGenerator.generate
            for k in range(num_images):
                if self.draws[k % len(self.draws)]:
                    images.append(render(scene_for(read_prompt(prompt), random.Random(f"{seed}/{prompt}/{k}"))))
                else:
                    images.append(Image.new("RGB", (DEFAULT_SIDE, DEFAULT_SIDE), "white" if k % 2 else "black"))
        return images


@pytest.fixture(scope="module")
def tiny_encoder(encoder_dir):
    return clip.load(encoder_dir, device="cpu")


def test_the_oracle_reads_every_geneval_prompt_as_meant():
    """The stand-in's prompt reader agrees with geneval_prompt's own specs, and its scenes survive the judge."""
    rng = random.Random(0)
    for category in GENEVAL_CATEGORIES:
        for held_out in (False, True) if category in HELD_OUT_CATEGORIES else (False,):
            for _ in range(30):
                text, spec = geneval_prompt(category, rng, held_out=held_out)
                assert read_prompt(text) == spec, text
                assert spec.satisfied_by(parse_image(render(scene_for(spec, rng)))), text


@pytest.mark.parametrize(
    ("draws", "expected"),
    [((True,), 1.0), ((False,), 0.0), ((True, False), 0.5)],
    ids=["oracle", "blank", "every-other-blank"],
)
def test_geneval_scores_an_oracle_and_a_blank_generator_exactly(tiny_encoder, draws, expected):
    """A generator that draws each prompt's own scene scores 1.0 in every category, held-out included; blank
    canvases 0.0; blank for the second image of every prompt exactly 0.5 (scores count images, prompt-major)."""
    generator = StandIn(tiny_encoder, draws)
    # the stand-in has no decoder: no VAE PSNR, no decoder recovery from true conditions
    scores = evaluate_generator(
        generator, count=3, images_per_prompt=2, seed=11, batch_prompts=2, vae_count=0, recovery_count=0, steps=7
    )
    assert scores["in_distribution"] == pytest.approx(
        {c: expected for c in GENEVAL_CATEGORIES}
        | {"overall": expected, "clip_score": scores["in_distribution"]["clip_score"]}
    )
    assert scores["held_out"] == pytest.approx(
        {c: expected for c in HELD_OUT_CATEGORIES}
        | {"overall": expected, "clip_score": scores["held_out"]["clip_score"]}
    )
    for split in scores.values():
        assert 0 <= split["clip_score"] <= 100 and math.isfinite(split["clip_score"])
    calls = generator.calls
    assert len(calls) == (len(GENEVAL_CATEGORIES) + len(HELD_OUT_CATEGORIES)) * 2  # 3 prompts in chunks of 2
    assert all(c["num_images"] == 2 and c.get("steps") == 7 and c["progress"] is False for c in calls)
    held = [p for c in calls[-2 * 2 :] for p in c["prompts"]]  # the held-out split's prompts name held-out pairs
    assert len(held) == 6 and all(any(f"{c} {s}" in p for c, s in sorted(HELD_OUT_PAIRS)) for p in held)


# ---------------------------------------------------------------------- effects on a tiny trained generator
@pytest.fixture(scope="module", params=["grid", "pooled"])
def gen(request, tmp_path_factory, encoder_dir):
    """The tiny generator, trained in seconds, in the spatial-grid layout (the spatial recipe's: grid and cell
    prior) and pooled (the bundled layout)."""
    recipe = tiny_recipe(encoder_dir)  # the spatial recipe's layout: the grid and the cell prior
    if request.param == "pooled":
        recipe = pooled(recipe)
    folder = tmp_path_factory.mktemp(f"effects_{request.param}")
    train(recipe, folder / "out", folder / "work", workers=0)
    generator = diffusion.load(str(folder / "out"), encoder=clip.load(encoder_dir, device="cpu"))
    assert (generator.decoder.grid is None) == (request.param == "pooled")
    return generator


FAST = {"steps": 3, "prior_steps": 3, "guidance": 4.0, "prior_guidance": 4.0, "scheduler": "ddim", "progress": False}


def same(a: list[Image.Image], b: list[Image.Image]) -> bool:
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def scene_image(seed: int) -> Image.Image:
    return render(sample_scene(seed))


def test_a_negative_prompt_changes_the_image_by_what_the_prior_says(gen):
    """Same seed, with and without a negative prompt: different images, and each is exactly the decoder run on
    the conditions the prior returns for it, continuing generate's one noise generator (seeded once, drawn from
    by the prior and then the decoder; decode_embeddings seeds a fresh one, so it cannot replay generate)."""
    prompts, negative = ["a red circle", "two stars"], "a red star"

    def replay(negatives):
        noise = torch.Generator("cpu").manual_seed(5)
        embeds, negative_embeds = gen.prior(
            prompts,
            negatives,
            steps=FAST["prior_steps"],
            guidance=FAST["prior_guidance"],
            generator=noise,
            num_images=2,
            progress=False,
        )
        latents = gen.decoder(
            embeds,
            negative_embeds,
            height=gen.image_size,
            width=gen.image_size,
            steps=FAST["steps"],
            guidance=FAST["guidance"],
            generator=noise,
            progress=False,
        )
        return embeds, negative_embeds, gen.decoder.decode(latents)

    plain = gen.generate(prompts, seed=5, num_images=2, output_type="pt", **FAST)
    negated = gen.generate(prompts, seed=5, num_images=2, negative_prompt=negative, output_type="pt", **FAST)
    assert all(not torch.equal(a, b) for a, b in zip(plain, negated))  # every image changes
    embeds, zero, pixels = replay(None)
    assert torch.equal(pixels, plain)
    assert torch.equal(zero, gen.zero_condition().expand_as(zero))
    negated_embeds, negative_embeds, negated_pixels = replay([negative] * 2)
    assert torch.equal(negated_pixels, negated)
    # the prior says two things: guided away from the negative, the image conditions move; and the decoder's
    # unconditional half is the negative prompt's own condition, not the zero image's
    assert not torch.equal(negated_embeds, embeds) and not torch.equal(negative_embeds, zero)
    assert negative_embeds.shape == negated_embeds.shape == (4, gen.decoder.condition_dim)


@pytest.mark.parametrize("first", ["prompt", "image"])
def test_weights_one_zero_give_the_first_item_alone(gen, first):
    """interpolate([x, y], [1, 0]) is exactly what x alone gives at the same seed: generate for a prompt (one
    image: interpolate draws one embedding per prompt), variations for an image."""
    x = "a large red circle in the top left" if first == "prompt" else scene_image(3)
    for y in ("two blue squares", scene_image(4)):
        mixed = gen.interpolate([x, y], [1, 0], seed=9, **FAST)
        assert same(mixed, gen.interpolate([x], [1], seed=9, **FAST))
        alone = gen.generate(x, seed=9, **FAST) if first == "prompt" else gen.variations(x, seed=9, **FAST)
        assert same(mixed, alone)
    if first == "image":  # several images: variations repeats the one condition, as interpolate does
        assert same(
            gen.interpolate([x, "a star"], [2.5, 0], seed=9, num_images=3, **FAST),
            gen.variations(x, seed=9, num_images=3, **FAST),
        )


@pytest.mark.parametrize("first", ["prompt", "image"])
@pytest.mark.parametrize("dropped", ["prompt-prompt", "image-image", "prompt-image"])
def test_a_zero_weight_removes_its_item(gen, first, dropped):
    """interpolate([a, b], [1, 0]) == interpolate([a, c], [1, 0]) == interpolate([c, a], [0, 1]) for any b, c,
    prompts or images: a weightless item leaves no trace, not even in the noise."""
    a = "a small green star in the center" if first == "prompt" else scene_image(6)
    kinds = {
        "prompt": ["three crosses", "a purple diamond on a black background"],
        "image": [scene_image(7), scene_image(8)],
    }
    kind_b, kind_c = dropped.split("-")
    b, c = kinds[kind_b][0], kinds[kind_c][1]
    with_b = gen.interpolate([a, b], [1, 0], seed=2, num_images=2, **FAST)
    assert same(with_b, gen.interpolate([a, c], [1, 0], seed=2, num_images=2, **FAST))
    assert same(with_b, gen.interpolate([c, a], [0, 1], seed=2, num_images=2, **FAST))
    assert not same(with_b, gen.interpolate([a, b], [1, 1], seed=2, num_images=2, **FAST))  # a weight does count


def test_variations_depend_on_their_input_image(gen):
    """Same seed: two different images give different draws (every one of them), the same image twice (as a
    PIL image and as its pixel array) gives identical draws."""
    first, second = scene_image(10), scene_image(11)
    a = gen.variations(first, seed=4, num_images=2, **FAST)
    assert same(a, gen.variations(np.asarray(first).copy(), seed=4, num_images=2, **FAST))
    b = gen.variations(second, seed=4, num_images=2, **FAST)
    assert all(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not same(a, gen.variations(first, seed=5, num_images=2, **FAST))  # the seed still draws anew
