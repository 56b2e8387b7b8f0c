"""The shapes world follows world.md: sampler, renderer, text, parsers, datasets."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from triptych.world import (
    COLORS,
    GENEVAL_CATEGORIES,
    HELD_OUT_CATEGORIES,
    HELD_OUT_PAIRS,
    POSITIONS,
    QUESTION_TYPES,
    UNKNOWN,
    CaptionParseError,
    ObjectSpec,
    PromptSpec,
    Scene,
    SceneObject,
    ShapesDataset,
    caption,
    describe_scene,
    export_folder,
    geneval_prompt,
    parse_caption,
    parse_image,
    question_answers,
    random_prompt_spec,
    random_question,
    relation,
    render,
    render_array,
    sample_scene,
)
from triptych.world.spec import max_jitter, object_side

HELD_OUT_TEXTS = [f"{c} {s}" for c, s in HELD_OUT_PAIRS]


def test_sampler_is_seeded_and_follows_the_contract():
    assert sample_scene(7) == sample_scene(7)
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(3000)]
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {s.background for s in scenes} == {"white", "black"}
    j = max_jitter(64)
    for s in scenes:
        assert len({o.cell for o in s.objects}) == len(s.objects)
        assert [o.cell for o in s.objects] == sorted(o.cell for o in s.objects)
        assert all(abs(o.dx) <= j and abs(o.dy) <= j for o in s.objects)
        assert not s.has_held_out
    counts = np.bincount([len(s.objects) for s in scenes])[1:]
    assert counts.min() > 850  # uniform over 1..3


def test_held_out_modes():
    only = [sample_scene(i, held_out="only") for i in range(300)]
    assert all(s.has_held_out for s in only)
    seen = {(o.color, o.shape) for i in range(3000) for o in sample_scene(i, held_out="include").objects}
    assert len(seen) == 48
    with pytest.raises(ValueError):
        sample_scene(0, held_out="maybe")


def test_renderer_geometry_and_colours():
    square = Scene((SceneObject("large", "red", "square", 4),), "black")
    img = render_array(square)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[32, 32]) == COLORS["red"]
    assert tuple(img[0, 0]) == (0, 0, 0)
    s = object_side("large", 64)
    red_area = (np.abs(img.astype(int) - COLORS["red"]).sum(-1) < 5).sum()
    assert abs(red_area - s * s) <= 4 * s  # the box, up to its anti-aliased rim
    edges = img[(img.sum(-1) > 0) & (np.abs(img.astype(int) - COLORS["red"]).sum(-1) > 5)]
    assert len(edges) == 0 or len(edges) < 4 * s  # flat colour, a thin anti-aliased edge at most
    triangle = render_array(Scene((SceneObject("large", "blue", "triangle", 4),), "white"))
    mask = (triangle != 255).any(-1)
    rows = mask.sum(1)
    top, bottom = np.nonzero(rows)[0][[0, -1]]
    assert rows[bottom] > rows[top]  # point up
    big = render(square, 192)
    assert big.size == (192, 192)


def test_world_md_caption_example():
    scene = Scene((SceneObject("large", "red", "circle", 0), SceneObject("small", "blue", "star", 4)), "black")
    assert caption(scene) == (
        "a large red circle in the top left and a small blue star in the center on a black background"
    )
    three = Scene(tuple(SceneObject("small", "green", "cross", c) for c in (8, 0, 4)), "white")
    assert caption(three) == (
        "a small green cross in the top left, a small green cross in the center and "
        "a small green cross in the bottom right"
    )


def test_caption_parser_round_trip_and_errors():
    for i in range(500):
        scene = sample_scene(i, held_out="include")
        parsed = parse_caption(caption(scene))
        assert parsed.keys() == scene.keys() and parsed.background == scene.background
    for bad in ("", "a red circle", "a huge red circle in the top left", "a large red circle in the top left and"):
        with pytest.raises(CaptionParseError):
            parse_caption(bad)


def test_prompts_are_true_of_their_scene_and_never_name_held_out_pairs():
    rng = random.Random(3)
    forms = set()
    for _ in range(4000):
        scene = sample_scene(rng)
        text, spec = random_prompt_spec(scene, rng)
        assert spec.satisfied_by(scene), text
        assert not any(pair in text for pair in HELD_OUT_TEXTS), text
        forms.add(spec.kind)
        assert "  " not in text and text == text.strip()
    assert forms == {"caption", "object", "objects", "relation", "count"}  # groups are "objects" specs


def test_prompt_specs_reject_scenes_that_differ():
    scene = Scene((SceneObject("large", "red", "circle", 0), SceneObject("small", "blue", "star", 2)), "white")
    moved = Scene((SceneObject("large", "red", "circle", 2), SceneObject("small", "blue", "star", 0)), "white")
    rng = random.Random(0)
    for _ in range(300):
        text, spec = random_prompt_spec(scene, rng)
        if spec.kind == "caption" or "to the" in text:  # captions and left/right relations name positions
            assert not spec.satisfied_by(moved), text
    assert relation(scene.objects[0], scene.objects[1]) == "to the left of"
    assert relation(SceneObject("small", "red", "star", 1), SceneObject("small", "red", "star", 7)) == "above"


def test_questions_answer_correctly():
    rng = random.Random(5)
    types = set()
    for _ in range(2000):
        scene = sample_scene(rng)
        qtype, question, answer = random_question(scene, rng)
        types.add(qtype)
        assert not any(pair in question for pair in HELD_OUT_TEXTS)
        if qtype == "count":
            assert answer == ["one", "two", "three"][len(scene.objects) - 1]
        elif qtype == "position":
            cell = POSITIONS.index(question[len("what is in the ") : -1])
            hit = [o for o in scene.objects if o.cell == cell]
            assert answer == (f"a {hit[0].size} {hit[0].color} {hit[0].shape}" if hit else "nothing")
        elif qtype == "exists":
            color, shape = question[len("is there a ") : -1].split()
            assert (answer == "yes") == any(o.color == color and o.shape == shape for o in scene.objects)
        elif qtype == "background":
            assert answer == scene.background
    assert types == set(QUESTION_TYPES)
    lonely = Scene((SceneObject("small", "red", "star", 0), SceneObject("small", "red", "star", 1)))
    with pytest.raises(LookupError):
        question_answers(lonely, "color", rng)


@pytest.mark.parametrize("side", [64, 128])
def test_image_parser_is_exact_on_clean_renders(side):
    for i in range(300):
        scene = sample_scene(i + 50_000, held_out="include", side=side)
        parsed = parse_image(render(scene))
        assert parsed.keys() == scene.keys() and parsed.background == scene.background


def test_image_parser_tolerates_noise_and_blur():
    rng = np.random.default_rng(0)
    errors = 0
    for i in range(300):
        scene = sample_scene(i + 90_000, held_out="include")
        blurred = render(scene).filter(ImageFilter.GaussianBlur(0.6))
        noisy = np.clip(np.asarray(blurred, np.float32) + rng.normal(0, 8, (64, 64, 3)), 0, 255).astype(np.uint8)
        errors += parse_image(Image.fromarray(noisy)).keys() != scene.keys()
    assert errors <= 3


def _blob(draw: Callable[[ImageDraw.ImageDraw], None], background: str = "white") -> Image.Image:
    """A 64 px image of something drawn at 4x in the center cell (anti-aliased as the world renders)."""
    image = Image.new("RGB", (256, 256), background)
    draw(ImageDraw.Draw(image))
    return image.resize((64, 64), Image.Resampling.BOX)


RED = (220, 30, 30)
MALFORMED = {
    "ellipse": lambda d: d.ellipse([88, 110, 168, 146], fill=RED),
    "quadrilateral": lambda d: d.polygon([(93, 118), (158, 98), (166, 153), (108, 163)], fill=RED),
    "circle merged with a square": lambda d: (
        d.ellipse([98, 98, 138, 138], fill=RED),
        d.rectangle([123, 123, 158, 158], fill=RED),
    ),
    "cluster of dots": lambda d: [
        d.ellipse([x, y, x + 34, y + 34], fill=RED) for x, y in ((88, 88), (134, 92), (104, 134))
    ],
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_image_parser_never_snaps_a_malformed_blob_to_a_shape(name):
    """The strict judge: a blob that is no world shape is `unknown`, and its scene satisfies no prompt."""
    parsed = parse_image(_blob(MALFORMED[name]))
    assert [o.shape for o in parsed.objects] == [UNKNOWN]
    assert not PromptSpec("object", (ObjectSpec(),)).satisfied_by(parsed)  # not even "an object"


def test_image_parser_calls_an_off_palette_colour_unknown():
    brown = (120, 80, 40)
    parsed = parse_image(_blob(lambda d: d.rectangle([108, 108, 148, 148], fill=brown)))
    assert [(o.color, o.shape) for o in parsed.objects] == [(UNKNOWN, "square")]


def test_clean_and_noisy_renders_never_read_unknown():
    rng = np.random.default_rng(1)
    for i in range(200):
        image = render(sample_scene(i + 70_000, held_out="include")).filter(ImageFilter.GaussianBlur(0.6))
        noisy = np.clip(np.asarray(image, np.float32) + rng.normal(0, 8, (64, 64, 3)), 0, 255).astype(np.uint8)
        assert all(UNKNOWN not in (o.shape, o.color) for o in parse_image(Image.fromarray(noisy)).objects)


def test_stray_fringe_pixels_are_not_objects():
    image = render(sample_scene(5, num_objects=1))
    arr = np.asarray(image).copy()
    arr[2:5, 2:5] = (30, 70, 230) if arr[0, 0, 0] > 127 else (250, 120, 200)  # 9 stray pixels in a corner cell
    assert parse_image(Image.fromarray(arr)).keys() == parse_image(image).keys()


def test_image_parser_reads_blank_images_as_empty():
    assert parse_image(Image.new("RGB", (64, 64), "white")).objects == ()
    assert parse_image(Image.new("RGB", (64, 64), "black")).background == "black"
    with pytest.raises(ValueError):
        parse_image(np.zeros((10, 20, 3)))


def test_dataset_streams_are_seeded_and_twins_keep_objects():
    first = [t for _, t in itertools.islice(ShapesDataset(seed=1), 20)]
    again = [t for _, t in itertools.islice(ShapesDataset(seed=1), 20)]
    other = [t for _, t in itertools.islice(ShapesDataset(seed=2), 20)]
    assert first == again and first != other
    items = list(itertools.islice(ShapesDataset(seed=0, with_meta=True, twins=1.0), 40))
    pairs = [(a[2], b[2]) for a, b in zip(items[::2], items[1::2])]
    for a, b in pairs:
        assert sorted((o.size, o.color, o.shape) for o in a.objects) == sorted(
            (o.size, o.color, o.shape) for o in b.objects
        )
    image, question, answer = next(iter(ShapesDataset(text="question")))
    assert image.size == (64, 64) and question.endswith("?") and answer


def test_export_folder(tmp_path):
    out = export_folder(tmp_path / "data", 5, seed=3)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5
    for png in pngs:
        meta = json.loads(png.with_suffix(".json").read_text())
        scene = Scene.from_dict(meta["scene"])
        assert png.with_suffix(".txt").read_text().strip() == caption(scene) == meta["caption"]
        assert parse_image(Image.open(png)).keys() == scene.keys()
    with pytest.raises(ValueError):
        export_folder(tmp_path / "none", 0)


def test_caption_objects_reads_phrases_even_from_broken_captions():
    from triptych.world import caption_objects

    scene = sample_scene(11, num_objects=3)
    assert caption_objects(caption(scene)) == scene.keys()
    broken = "a large red circle in the top left and and a small blue star in the center ,"
    assert caption_objects(broken) == {("large", "red", "circle", 0), ("small", "blue", "star", 4)}
    assert caption_objects("nothing here") == set()


def test_position_questions_can_favour_occupied_cells():
    rng = random.Random(2)
    scenes = [sample_scene(rng) for _ in range(1000)]
    uniform = sum(question_answers(s, "position", rng)[1] != "nothing" for s in scenes) / 1000
    favoured = sum(question_answers(s, "position", rng, occupied=0.5)[1] != "nothing" for s in scenes) / 1000
    assert uniform < 0.3 < 0.5 < favoured  # ~2/9 of cells hold an object; half the time an occupied one is asked


def test_scene_descriptions_name_every_object_exactly():
    rng = random.Random(4)
    kinds = set()
    for _ in range(3000):
        scene = sample_scene(rng)
        text, spec = describe_scene(scene, rng)
        kinds.add(spec.kind)
        assert spec.satisfied_by(scene), text
        assert not any(pair in text for pair in HELD_OUT_TEXTS), text
        extra = Scene(scene.objects + tuple(_free_object(scene)), scene.background) if len(scene.objects) < 3 else None
        if extra is not None:
            assert not spec.satisfied_by(extra), text  # one object more no longer fits the description
    assert kinds == {"caption", "objects", "relation", "count"}


def _free_object(scene: Scene) -> list[SceneObject]:
    cell = next(c for c in range(9) if c not in {o.cell for o in scene.objects})
    return [SceneObject("small", "red", "circle", cell)]


@pytest.mark.parametrize("category", GENEVAL_CATEGORIES)
def test_geneval_prompts_have_exact_meanings(category):
    rng = random.Random(category)
    for _ in range(50):
        text, spec = geneval_prompt(category, rng)
        assert not any(pair in text for pair in HELD_OUT_TEXTS), text
        scene = _scene_for(spec, rng)
        if scene is not None:
            assert spec.satisfied_by(scene), (text, scene)
            fewer = Scene(scene.objects[:-1], scene.background)  # one object short
            assert not spec.satisfied_by(fewer), text
    if category in HELD_OUT_CATEGORIES:
        text, _ = geneval_prompt(category, rng, held_out=True)
        assert any(pair in text for pair in HELD_OUT_TEXTS), text
    else:
        with pytest.raises(ValueError):
            geneval_prompt(category, rng, held_out=True)


def _scene_for(spec, rng: random.Random) -> Scene | None:
    """A scene that satisfies a GenEval spec, found by sampling (None when sampling does not find one soon)."""
    n = spec.count or len(spec.objects)
    for _ in range(20000):
        scene = sample_scene(rng, held_out="include", num_objects=n, background=spec.background)
        if spec.satisfied_by(scene):
            return scene
    return None
