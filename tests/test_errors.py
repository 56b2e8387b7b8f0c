"""Issue 13, items 5 and 6: every public entry point refuses bad input with a typed TriptychError naming the argument
(never a TypeError, a torch overflow or a silent wrong result), and the CLI scripts answer with one line and exit
status 2, checking their outputs before any work. Runs on the bundled shapes models; every refusal here happens
before a model runs, so the module takes seconds."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from triptych import diffusion, vlm
from triptych.core.errors import InvalidImageError, InvalidLabelsError, InvalidSettingError, InvalidTextError
from triptych.weights import SHAPES_DIR
from triptych.world import render, sample_scene

SCENE = Path("weights/examples/scene-1.png")
FAST = {"steps": 2, "prior_steps": 2, "progress": False}


@pytest.fixture(scope="module")
def captioner(encoder):
    return vlm.load("shapes", encoder=encoder)


@pytest.fixture(scope="module")
def gen(encoder):
    return diffusion.load("shapes", encoder=encoder)


@pytest.fixture(scope="module")
def image():
    return render(sample_scene(3))


# ---------------------------------------------------------------------- encoder
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e, im: e.encode_image(None), InvalidImageError, "NoneType"),
        (lambda e, im: e.encode_image(5), InvalidImageError, "from int"),
        (lambda e, im: e.encode_image(torch.zeros(3, 8, 8)), InvalidImageError, "Tensor"),
        (lambda e, im: e.encode_image(im, batch_size=0), InvalidSettingError, "batch_size"),
        (lambda e, im: e.encode_text(b"abc"), InvalidTextError, "got bytes"),
        (lambda e, im: e.encode_text(None), InvalidTextError, "got NoneType"),
        (lambda e, im: e.encode_text(7), InvalidTextError, "got int"),
        (lambda e, im: e.encode_text(["a", 7]), InvalidTextError, "#1 must be a string, got int"),
        (lambda e, im: e.encode_text("a \ud800 b"), InvalidTextError, "not valid Unicode"),
        (lambda e, im: e.encode_text("a", batch_size=2.5), InvalidSettingError, "batch_size"),
        (lambda e, im: e.classify(im, ["a", "b"], "{x} {}"), InvalidTextError, "exactly one"),
        (lambda e, im: e.classify(im, ["a", "b"], "{} {0}"), InvalidTextError, "exactly one"),
        (lambda e, im: e.classify(im, ["a", "b"], "{:>999999999}"), InvalidTextError, "format specs"),
        (lambda e, im: e.classify(im, ["a", "b"], ["{} {"]), InvalidTextError, "not a valid format string"),
        (lambda e, im: e.classify(im, ["a", "b"], b"{}"), InvalidTextError, "got bytes"),
        (lambda e, im: e.classify(im, ["a", "b"], "{}" * 600), InvalidTextError, "characters long"),
        (lambda e, im: e.classify(im, None), InvalidLabelsError, "got NoneType"),
        (lambda e, im: e.classify(im, 5), InvalidLabelsError, "got int"),
        (lambda e, im: e.patch_tokens(im, layer=99), InvalidSettingError, "layer"),
        (lambda e, im: e.patch_tokens(im, layer=1.5), InvalidSettingError, "layer"),
    ],
)
def test_encoder_refuses_bad_input(encoder, image, call, error, message):
    with pytest.raises(error, match=message):
        call(encoder, image)


def test_templates_with_escaped_braces_still_work(encoder, image):
    probs = encoder.classify(image, ["a red circle", "a blue star"], ["{{}} {}", "a picture of {}"])
    assert probs.shape == (1, 2) and torch.allclose(probs.sum(-1), torch.ones(1))


# ---------------------------------------------------------------------- VLM
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"questions": None}, InvalidTextError, "question must be a string"),
        ({"questions": 5}, InvalidTextError, "got int"),
        ({"num_beams": 2.5}, InvalidSettingError, "num_beams"),
        ({"num_beams": 10**6}, InvalidSettingError, "num_beams"),  # used to allocate 10**6 KV caches
        ({"seed": 2**70, "temperature": 1.0}, InvalidSettingError, "seed"),
        ({"seed": -1, "temperature": 1.0}, InvalidSettingError, "seed"),
        ({"seed": math.nan, "temperature": 1.0}, InvalidSettingError, "seed"),
        ({"top_k": 1.5, "temperature": 1.0}, InvalidSettingError, "top_k"),
        ({"length_penalty": math.nan, "num_beams": 2}, InvalidSettingError, "length_penalty"),
        ({"max_new_tokens": 2.0}, InvalidSettingError, "max_new_tokens"),
        ({"stop_strings": [1]}, InvalidSettingError, "stop_strings"),
        ({"use_cache": "no"}, InvalidSettingError, "use_cache"),
        ({"temprature": 0.5}, InvalidSettingError, "unknown generation settings"),
        ({"batch_size": 0}, InvalidSettingError, "batch_size"),
        ({"images": None}, InvalidImageError, "NoneType"),
    ],
)
def test_captioner_refuses_bad_input(captioner, image, kwargs, error, message):
    args = {"images": image, "questions": "how many objects are there?", **kwargs}
    with pytest.raises(error, match=message):
        captioner.ask(**args)


def test_stream_refuses_more_than_it_streams(captioner, image):
    with pytest.raises(InvalidImageError, match="one image"):
        captioner.stream([image, image])
    with pytest.raises(InvalidTextError, match="one prompt"):
        captioner.stream(image, ["how many objects are there?", "what color is the background?"])
    with pytest.raises(InvalidTextError, match="got int"):
        captioner.stream(image, 5)


def test_a_str_stop_string_is_one_stop_string(captioner, image):
    """transformers' generate takes a str as one stop string; split into characters it stopped at once ('')."""
    full = captioner.caption(image, max_new_tokens=16)[0]
    word = full.split()[3]  # a word past the start: the cut keeps some text
    cut = full[: full.find(word)]
    assert cut and any(c in cut for c in word)  # read per character, the stop would come earlier
    assert captioner.caption(image, max_new_tokens=16, stop_strings=word)[0] == cut
    assert captioner.caption(image, max_new_tokens=16, stop_strings=[word])[0] == cut


# ---------------------------------------------------------------------- generator
def conditions(gen, n: int) -> torch.Tensor:
    """(n, E) ones of the width the generator's decoder takes (wider than the embedding in the spatial layout)."""
    return torch.ones(n, gen.decoder.condition_dim)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda g, im: g.generate("a star", negative_prompt=123, **FAST), InvalidTextError, "negative prompt"),
        (lambda g, im: g.generate(None, **FAST), InvalidTextError, "got NoneType"),
        (lambda g, im: g.generate(b"a star", **FAST), InvalidTextError, "got bytes"),
        (lambda g, im: g.generate("a star", seed=2**70, **FAST), InvalidSettingError, "seed"),
        (lambda g, im: g.generate("a star", seed=math.nan, **FAST), InvalidSettingError, "seed"),
        (lambda g, im: g.generate("a star", scheduler=["ddim"], **FAST), InvalidSettingError, "scheduler"),
        (lambda g, im: g.generate("a star", callback=5, **FAST), InvalidSettingError, "callback"),
        (lambda g, im: g.generate("a star", strength=0.5, **FAST), InvalidSettingError, "generate does not use"),
        (lambda g, im: g.variations(im, strength=0.5, **FAST), InvalidSettingError, "variations does not use"),
        (
            lambda g, im: g.interpolate(["a star", im], [1, 1], strength=0.5, **FAST),
            InvalidSettingError,
            "interpolate does not use",
        ),
        (lambda g, im: g.variations(None, **FAST), InvalidImageError, "NoneType"),
        (lambda g, im: g.img2img(im, ["a red circle", "a blue star"], **FAST), InvalidTextError, "one prompt"),
        (lambda g, im: g.img2img(im, "a star", negative_prompt=["a", "b"], **FAST), InvalidTextError, "negative"),
        (lambda g, im: g.decode_embeddings([[1.0]], steps=2), InvalidSettingError, "tensor"),
        (lambda g, im: g.decode_embeddings(torch.ones(1, 3), steps=2), InvalidSettingError, r"\(1, 3\)"),
        (lambda g, im: g.decode_embeddings(conditions(g, 1) * math.nan, steps=2), InvalidSettingError, "finite"),
        (lambda g, im: g.decode_embeddings(conditions(g, 1), conditions(g, 2)), InvalidSettingError, "shape"),
        (lambda g, im: g.decode_embeddings(conditions(g, 1), num_images=2), InvalidSettingError, "num_images"),
    ],
)
def test_generator_refuses_bad_input(gen, image, call, error, message):
    with pytest.raises(error, match=message):
        call(gen, image)


def test_float_image_holding_nan_is_refused_at_every_entry_point(encoder, captioner, gen):
    nan = Image.fromarray(np.full((16, 16), np.nan, np.float32), "F")
    for call in (encoder.encode_image, captioner.caption, lambda im: gen.variations(im, **FAST)):
        with pytest.raises(InvalidImageError, match="NaN"):
            call(nan)


# ---------------------------------------------------------------------- CLI
def run_cli(capsys, main, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def one_line_error(err: str, *words: str) -> bool:
    return err.count("\n") == 1 and "error:" in err and all(w in err for w in words) and "Traceback" not in err


def test_generate_checks_outputs_before_loading_anything(capsys, tmp_path):
    """A model that does not exist shows the order: the bad output path is named, not the model."""
    from triptych.apps.cli.generate import main

    missing_model = ["--model", str(tmp_path / "no-model")]
    code, err = run_cli(capsys, main, "a star", "--out", "/proc/nope", *missing_model)
    assert code == 2 and one_line_error(err, "--out", "/proc/nope")
    code, err = run_cli(capsys, main, "a star", "--out", str(tmp_path), "--grid", "/proc/nope/grid.png", *missing_model)
    assert code == 2 and one_line_error(err, "--grid")
    code, err = run_cli(capsys, main, "a star", "--out", str(tmp_path), "--grid", str(tmp_path), *missing_model)
    assert code == 2 and one_line_error(err, "--grid", "is a folder")
    (tmp_path / "file").write_text("x")
    code, err = run_cli(capsys, main, "a star", "--out", str(tmp_path / "file"), *missing_model)
    assert code == 2 and one_line_error(err, "is a file")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--interpolate", "a red circle", "typo.png"], ["typo.png", "--image"]),  # the old form: no longer text
        (["--interpolate", "a red circle", "--image", "typo.png"], ["typo.png", "no such file"]),
        (["--variations", "typo.png"], ["typo.png", "no such file"]),
        (["a star", "--init-image", "typo.png"], ["typo.png", "no such file"]),
        (["--interpolate", "a red circle", "--image", str(SCENE), "--weights", "1"], ["--weights", "2 items"]),
        (["--interpolate", "a", "--image", str(SCENE), "b"], ["stray prompt 'b'"]),
        (["--interpolate"], ["at least one"]),
        (["--image", str(SCENE)], ["--image goes with --interpolate"]),
        (["a star", "--strength", "0.5"], ["--strength goes with --init-image"]),
        (["--variations", str(SCENE), "--negative-prompt", "x"], ["--negative-prompt"]),
        (["a star", "--seed", str(2**70)], ["seed"]),
        (["a star", "--steps", "0"], ["steps"]),
    ],
)
def test_generate_refuses_bad_usage_before_loading(capsys, tmp_path, args, words):
    from triptych.apps.cli.generate import main

    code, err = run_cli(capsys, main, *args, "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-model"))
    assert code == 2 and one_line_error(err, *words), err


def test_interpolate_blends_in_the_order_written(gen, tmp_path):
    """--image files and the prompts after --interpolate weigh in the order written: the file the CLI writes is
    the API's blend of [image, prompt] with those weights."""
    from triptych.apps.cli.generate import main
    from triptych.clip import load_image

    args = ["--steps", "2", "--prior-steps", "2", "--device", "cpu", "--out", str(tmp_path)]
    assert main(["--image", str(SCENE), "--interpolate", "a red circle", "--weights", "0.8", "0.2", *args]) == 0
    expected = gen.interpolate([load_image(SCENE), "a red circle"], [0.8, 0.2], steps=2, prior_steps=2, progress=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "000-blend.png")), np.asarray(expected[0]))


def test_caption_and_evaluate_check_settings_and_outputs_first(capsys, tmp_path):
    from triptych.apps.cli.caption import main as caption
    from triptych.apps.evaluation.main import main as evaluate

    missing = str(tmp_path / "no-model")
    code, err = run_cli(capsys, caption, str(SCENE), "--seed", "99999999999999999999999", "--model", missing)
    assert code == 2 and one_line_error(err, "seed")
    code, err = run_cli(capsys, caption, str(SCENE), "--beams", "0", "--model", missing)
    assert code == 2 and one_line_error(err, "num_beams")
    code, err = run_cli(capsys, evaluate, "clip", "--json", "/proc/nope/scores.json", "--model", missing)
    assert code == 2 and one_line_error(err, "--json")
    code, err = run_cli(capsys, evaluate, "diffusion", "--steps", "0", "--model", missing)
    assert code == 2 and one_line_error(err, "steps")
    code, err = run_cli(capsys, evaluate, "vlm", "--model", missing, "--count", "1")
    assert code == 2 and one_line_error(err, "no-model")


def test_corrupt_model_folders_are_one_line_errors(capsys, tmp_path):
    from triptych.apps.cli.caption import main as caption
    from triptych.apps.cli.classify import main as classify

    for part, weights in (("clip", "open_clip_model.safetensors"), ("vlm", "model.safetensors")):
        folder = tmp_path / part
        shutil.copytree(SHAPES_DIR / part, folder)
        (folder / "manifest.json").unlink()
        (folder / weights).write_bytes((folder / weights).read_bytes()[:1000])  # truncated
    code, err = run_cli(capsys, classify, str(SCENE), "--labels", "a", "b", "--model", f"local-dir:{tmp_path / 'clip'}")
    assert code == 2 and one_line_error(err, str(tmp_path / "clip")), err
    code, err = run_cli(capsys, caption, str(SCENE), "--model", str(tmp_path / "vlm"), "--device", "cpu")
    assert code == 2 and one_line_error(err, str(tmp_path / "vlm")), err
