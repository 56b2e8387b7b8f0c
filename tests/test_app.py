"""The Gradio app over HTTP: every named endpoint driven by a real gradio_client against a real server."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from triptych.apps.benchmarks.load import judge_generated
from triptych.world import ALL_PAIRS, caption, parse_image, render, sample_scene

OBJECT_LABELS = ", ".join(f"a {color} {shape}" for color, shape in ALL_PAIRS)
ENDPOINTS = {"/classify", "/caption", "/ask", "/generate", "/variations", "/interpolate"}
FAST = dict(seed=3, steps=8, guidance=4.0, prior_steps=5, prior_guidance=4.0, scheduler="ddim")


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[tuple[Path, object]]:
    """Fresh world scenes saved as PNG uploads, with their scene objects."""
    folder = tmp_path_factory.mktemp("uploads")
    rng = random.Random(20261123)
    out = []
    for i in range(6):
        scene = sample_scene(rng, num_objects=1 if i < 3 else None)
        path = folder / f"scene-{i}.png"
        render(scene).save(path)
        out.append((path, scene))
    return out


def _gallery_images(result: list[dict]) -> list[Image.Image]:
    return [Image.open(item["image"]).convert("RGB") for item in result]


def generate_args(prompt: str, num_images: int = 2, **changes) -> tuple:
    s = {**FAST, **changes}
    return (prompt, changes.get("negative", ""), num_images, changes.get("best_of", 1), s["seed"], s["steps"],
            s["guidance"], s["prior_steps"], s["prior_guidance"], s["scheduler"])  # fmt: skip


def test_one_encoder_serves_every_capability(service) -> None:
    assert service.captioner.encoder is service.encoder
    assert service.generator.encoder is service.encoder
    assert service.generator.prior.encoder is service.encoder
    assert "Preset" in service.about() and "encoder" in service.about()


def test_named_endpoints(client: Client) -> None:
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert named >= ENDPOINTS


def test_classify_ranks_the_true_object_first(client: Client, scenes) -> None:
    for path, scene in scenes[:3]:
        result = client.predict(handle_file(str(path)), OBJECT_LABELS, "world", api_name="/classify")
        obj = scene.objects[0]
        assert result["label"] == f"a {obj.color} {obj.shape}"
        assert len(result["confidences"]) == 10  # the top ten, ranked
        probs = [c["confidence"] for c in result["confidences"]]
        assert probs == sorted(probs, reverse=True)


def test_caption_streams_token_by_token(client: Client, scenes) -> None:
    path, scene = scenes[4]
    job = client.submit(handle_file(str(path)), api_name="/caption")
    final = job.result(timeout=120)
    updates = job.outputs()
    assert final == caption(scene)
    assert len(updates) > 3  # streamed, not one message
    assert all(b.startswith(a) for a, b in zip(updates, updates[1:]))


def test_ask_from_concurrent_clients(app_url: str, scenes) -> None:
    def ask(item: tuple[Path, object]) -> tuple[str, str]:
        path, scene = item
        answer = Client(app_url, verbose=False).predict(
            handle_file(str(path)), "how many objects are there?", api_name="/ask"
        )
        return answer, ("one", "two", "three")[len(scene.objects) - 1]

    with ThreadPoolExecutor(6) as pool:
        for answer, expected in pool.map(ask, scenes):
            assert answer == expected


def test_generate_returns_reproducible_images(client: Client) -> None:
    first = _gallery_images(client.predict(*generate_args("a large red circle"), api_name="/generate"))
    again = _gallery_images(client.predict(*generate_args("a large red circle"), api_name="/generate"))
    other = _gallery_images(client.predict(*generate_args("a large red circle", seed=4), api_name="/generate"))
    assert len(first) == 2 and all(im.size == (64, 64) for im in first)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]
    assert first[0].tobytes() != other[0].tobytes()
    assert judge_generated(first + other, "red", "circle") is None  # most show it, none is blank


def test_variations_and_interpolation(client: Client, scenes) -> None:
    path = handle_file(str(scenes[0][0]))
    settings = tuple(FAST.values())
    varied = _gallery_images(client.predict(path, 3, *settings, api_name="/variations"))
    assert len(varied) == 3 and all(im.size == (64, 64) for im in varied)
    source = scenes[0][1].objects[0]
    assert judge_generated(varied, source.color, source.shape) is None
    blended = _gallery_images(
        client.predict(
            "a large red circle", "a large blue square", path, 0.4, 0.4, 0.2, 2, *settings, api_name="/interpolate"
        )
    )
    assert len(blended) == 2 and any(parse_image(image).objects for image in blended)  # blends may miss; not all


def _png_of_size(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height with almost no data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()[:300]


BAD_UPLOADS = {
    "corrupt": (b"this is not an image", "not a readable image"),
    "zero-byte": (b"", "empty|0 bytes|no image data"),
    "truncated": (_truncated_png(), "corrupt or truncated"),
    "bomb": (_png_of_size(30_000, 30_000), "too large|pixel limit"),
}


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_bad_uploads_get_a_clear_error_and_the_server_carries_on(client: Client, tmp_path, kind: str, scenes) -> None:
    data, message = BAD_UPLOADS[kind]
    bad = tmp_path / f"{kind}.png"
    bad.write_bytes(data)
    for args, endpoint in (
        ((handle_file(str(bad)), OBJECT_LABELS, "world"), "/classify"),
        ((handle_file(str(bad)),), "/caption"),
        ((handle_file(str(bad)), "how many objects are there?"), "/ask"),
        ((handle_file(str(bad)), 1, *FAST.values()), "/variations"),
    ):
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name=endpoint)
    assert client.predict(handle_file(str(scenes[0][0])), "a red circle, a blue star", "world", api_name="/classify")


def test_oversized_upload_is_refused(client: Client, tmp_path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (11 * 1024 * 1024))
    with pytest.raises(Exception, match="(?i)too large|size|413"):
        client.predict(handle_file(str(big)), OBJECT_LABELS, "world", api_name="/classify")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "less than minimum value 1"),  # the form's own bounds, checked by Gradio
        ({"steps": 1001}, "greater than maximum value 200"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"guidance": -1.0}, "less than minimum value 0"),  # NaN and inf cannot travel in JSON at all;
        ({"prior_guidance": 1e308}, "greater than maximum value 20"),  # the Python API's tests cover them
        ({"seed": -1}, "less than minimum value 0"),
        ({"seed": 2**70}, "seed must be an integer"),
        ({"scheduler": "euler"}, "euler"),
    ],
)
def test_bad_generation_settings(client: Client, change: dict, message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(*generate_args("a red circle", **change), api_name="/generate")


@pytest.mark.parametrize(
    ("prompt", "num_images", "message"),
    [
        ("", 1, "empty"),
        ("a red circle " * 2000, 1, "long|limit|tokens"),
        ("a red circle", 0, "less than minimum value 1"),
        ("a red circle", 10_000, "greater than maximum value 8"),
    ],  # fmt: skip
)
def test_bad_prompts_and_counts(client: Client, prompt: str, num_images: int, message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(*generate_args(prompt, num_images=num_images), api_name="/generate")


def test_bad_labels_and_questions(client: Client, scenes) -> None:
    image = handle_file(str(scenes[0][0]))
    with pytest.raises(AppError, match="label list is empty"):
        client.predict(image, " , ,", "world", api_name="/classify")
    with pytest.raises(AppError, match="'klingon' .* not in the list of choices"):
        client.predict(image, "a, b", "klingon", api_name="/classify")
    with pytest.raises(AppError, match="empty"):
        client.predict(image, "   ", api_name="/ask")
    with pytest.raises(AppError, match="nothing to blend"):
        client.predict("", "", None, 0.5, 0.5, 0.0, 1, *FAST.values(), api_name="/interpolate")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": "10"}, "steps must be a number, got '10'"),  # Gradio's own check answers these with a bare
        ({"steps": None}, "steps must be a number, got None"),  # `"error": null`
        ({"guidance": "4"}, "guidance must be a number, got '4'"),
        ({"seed": None}, "seed must be a number, got None"),
        ({"num_images": None}, "num_images must be a number, got None"),
        ({"best_of": [2]}, r"best_of must be a number, got \[2\]"),
        ({"prompt": ["a red circle"]}, r"prompt must be text, got \['a red circle'\]"),  # not its repr as a prompt
        ({"negative": ["a blue square"]}, "negative_prompt must be text"),
        ({"prompt": None}, "prompt must be text, got None"),
        ({"scheduler": None}, "scheduler must be text, got None"),
    ],
)
def test_wrong_types_get_a_message(client: Client, change: dict, message: str) -> None:
    args = list(generate_args("a red circle", num_images=1))
    position = {"prompt": 0, "negative": 1, "num_images": 2, "best_of": 3, "seed": 4, "steps": 5, "guidance": 6}
    for name, value in change.items():
        args[position.get(name, 9)] = value
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")


def test_wrong_types_in_every_tab(client: Client, scenes) -> None:
    image = handle_file(str(scenes[0][0]))
    with pytest.raises(AppError, match="labels must be text, got"):
        client.predict(image, ["a red circle", "a blue square"], "world", api_name="/classify")
    with pytest.raises(AppError, match="question must be text"):
        client.predict(image, ["how many objects are there?"], api_name="/ask")
    with pytest.raises(AppError, match="weight_a must be a number, got '0.5'"):
        client.predict("a red circle", "", None, "0.5", 0.5, 0.0, 1, *FAST.values(), api_name="/interpolate")


def call_raw(app_url: str, api: str, body: str) -> tuple[str, object]:
    """The HTTP API without gradio_client (which fills in missing inputs and cannot send NaN): (event, data)."""
    posted = httpx.post(f"{app_url}gradio_api/call/{api}", content=body, headers={"content-type": "application/json"})
    event_id = posted.json()["event_id"]
    lines = httpx.get(f"{app_url}gradio_api/call/{api}/{event_id}", timeout=120).text.strip().splitlines()
    return lines[-2].removeprefix("event: "), json.loads(lines[-1].removeprefix("data: "))


def test_missing_inputs_and_nan_get_a_message(app_url: str) -> None:
    event, data = call_raw(app_url, "generate", json.dumps({"data": ["a red circle", "", 1, 1]}))
    assert event == "error"
    assert data["error"].startswith("/generate takes 10 inputs (prompt, negative_prompt, num_images, best_of, seed")
    assert data["error"].endswith("got 4")
    settings = [3, 8, 4.0, 5, 4.0, "ddim"]
    for position, name in enumerate(["seed", "steps", "guidance", "prior_steps"]):  # NaN (Python's JSON writes it,
        nan_settings = settings[:position] + [float("nan")] + settings[position + 1 :]  # the server reads it)
        event, data = call_raw(app_url, "generate", json.dumps({"data": ["a red circle", "", 1, 1, *nan_settings]}))
        assert (event, data["error"]) == ("error", f"{name} must be a number, got nan")
