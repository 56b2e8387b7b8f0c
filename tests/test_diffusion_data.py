"""The generator's training data: the world's mix, and a recipe's `focus` on count and relation prompts."""

from __future__ import annotations

import math
import random

import pytest

from tests.tiny_diffusion import tiny_recipe
from tests.tiny_models import make_tiny_encoder_dir
from triptych.diffusion.data import WorldImages, check_focus, same_shape_scene
from triptych.diffusion.train import Run
from triptych.world import NUMBER_WORDS, describe_scene, parse_image, render, sample_scene
from triptych.world.text import RELATIONS


def test_describe_scene_gives_the_form_asked_and_its_meaning_holds():
    rng = random.Random(0)
    for _ in range(50):
        two = sample_scene(rng, num_objects=2)
        text, spec = describe_scene(two, rng, form="relation")
        assert spec.kind == "relation" and spec.relation in text and spec.satisfied_by(two)
        text, spec = describe_scene(two, rng, form="count")
        assert spec.kind == "count" and spec.count == 2 and spec.satisfied_by(two)
    one = sample_scene(rng, num_objects=1)
    assert describe_scene(one, rng, form="relation")[1].kind == "objects"  # a relation needs two objects
    with pytest.raises(ValueError, match="unknown form 'story'"):
        describe_scene(one, rng, form="story")


def test_same_shape_scenes_hold_one_shape_in_training_pairs_only():
    rng = random.Random(1)
    scenes = [same_shape_scene(rng, 64) for _ in range(300)]
    assert all(2 <= len(s.objects) <= 3 and len({o.shape for o in s.objects}) == 1 for s in scenes)
    assert not any(o.is_held_out for s in scenes for o in s.objects)
    one_colour = sum(len({o.color for o in s.objects}) == 1 for s in scenes) / len(scenes)
    assert 0.4 < one_colour < 0.75  # half by design, plus the mixed draws that happen to agree
    assert len({s.objects[0].shape for s in scenes}) > 4


def _counted(prompt: str) -> int | None:
    """The number a count prompt names (two or three), else None."""
    return next((n for n, word in enumerate(NUMBER_WORDS, 1) if n > 1 and f"{word} " in prompt), None)


def test_focus_draws_its_share_of_count_and_relation_prompts_that_the_images_satisfy():
    images, prompts = WorldImages(0, 64, "prior", focus={"count": 1.0})(3)
    for image, prompt in zip(images, prompts):
        scene = parse_image(image)
        assert _counted(prompt) == len(scene.objects) and len({o.shape for o in scene.objects}) == 1, prompt
    images, prompts = WorldImages(0, 64, "prior", focus={"relation": 1.0})(3)
    for image, prompt in zip(images, prompts):
        assert any(r in prompt for r in RELATIONS) and len(parse_image(image).objects) == 2, prompt
    mixed = WorldImages(0, 512, "prior", focus={"relation": 0.25})(0)[1]
    plain = WorldImages(0, 512, "prior")(0)[1]
    share = [sum(any(r in p for r in RELATIONS) for p in ps) / len(ps) for ps in (mixed, plain)]
    assert share[0] > 0.22 and share[1] < 0.1  # the focused quarter plus the mix's own relations; the mix alone ~5 %


def test_no_focus_is_the_worlds_mix_unchanged():
    """Without focus (or with every share 0) a batch is the world's mix drawn as before focus existed: all
    scenes, then all prompts, from the step's own random stream."""
    rng = random.Random("diffusion/prior/7/0/2")
    scenes = [sample_scene(rng, side=64) for _ in range(8)]
    before = [render(s) for s in scenes], [describe_scene(s, rng)[0] for s in scenes]
    for focus in (None, {}, {"count": 0, "relation": 0.0}):
        images, prompts = WorldImages(7, 8, "prior", focus=focus)(2)
        assert prompts == before[1] and [i.tobytes() for i in images] == [i.tobytes() for i in before[0]]


@pytest.mark.parametrize(
    "focus, message",
    [
        ({"colour": 0.2}, "unknown prompt forms"),
        ({"count": -0.1}, ">= 0"),
        ({"count": math.nan}, "finite"),
        ({"count": "0.2"}, "finite"),
        ({"count": True}, "finite"),
        ({"count": 0.7, "relation": 0.4}, "at most 1"),
    ],
)
def test_a_bad_focus_is_refused_by_name(focus, message):
    with pytest.raises(ValueError, match=message):
        check_focus(focus)


def test_the_recipes_focus_reaches_the_prior_batches_only(tmp_path):
    recipe = tiny_recipe(str(make_tiny_encoder_dir(tmp_path / "enc")))
    recipe["prior"]["focus"] = {"relation": 1.0}
    run = Run(recipe, tmp_path / "work", None, 0, True)
    prompts = run.batches("prior")(0)[1]
    assert all(any(r in p for r in RELATIONS) for p in prompts)
    assert run.batches("decoder").focus == {}
