"""Faults in service, against a real Gradio server driven by gradio_client: a client that leaves mid-stream or
cancels mid-generation frees the model at once; a model call that raises fails its own request alone, with a
message; SIGTERM stops `triptych serve` in order (messages for unfinished requests, exit status 0 within 10 s).

Faults are injected the way they happen: a real client process killed mid-stream, a real cancel, a real signal;
a failing model is the real Service with one method made to raise (in-process), as the device would.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from triptych.apps.benchmarks.load import serve_in_background
from triptych.world import ALL_PAIRS, render, sample_scene

LABELS = ", ".join(f"a {color} {shape}" for color, shape in ALL_PAIRS)
QUICK = ("a red circle", "", 1, 1, 0, 2, 4.0, 2, 4.0, "ddim")  # a 2-step generation: /generate's 10 inputs
LONG = ("a red circle", "", 8, 1, 0, 200, 4.0, 10, 4.0, "ddim")  # 8 images x 200 steps: a minute or more on a CPU

# a client in its own process: starts a caption stream, says so after the first update, then waits to be killed
LEAVER = """
import sys
from gradio_client import Client, handle_file
job = Client(sys.argv[1], verbose=False).submit(handle_file(sys.argv[2]), api_name="/caption")
while not job.outputs():
    pass
print("streaming", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def single_objects(tmp_path_factory) -> list[tuple[Path, str]]:
    """Single-object scenes as uploads, with their true label."""
    folder, rng, out = tmp_path_factory.mktemp("faults"), random.Random(808), []
    for i in range(3):
        scene = sample_scene(rng, num_objects=1)
        path = folder / f"scene-{i}.png"
        render(scene).save(path)
        out.append((path, f"a {scene.objects[0].color} {scene.objects[0].shape}"))
    return out


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_client_leaving_mid_stream_frees_the_model_at_once(app_url, client, service, single_objects, monkeypatch):
    stream = service.captioner.stream

    def slow_stream(image, *args, **kwargs):  # the real stream, 0.5 s a token: a caption takes 10 s or more
        for piece in stream(image, *args, **kwargs):
            time.sleep(0.5)
            yield piece

    monkeypatch.setattr(service.captioner, "stream", slow_stream)
    leaver = subprocess.Popen(
        [sys.executable, "-c", LEAVER, app_url, str(single_objects[0][0])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert leaver.stdout.readline().strip() == "streaming"
    finally:
        leaver.kill()
        leaver.wait()
    # the next model call (same one-at-a-time group as captions) runs now, not after the abandoned caption
    assert timed(lambda: client.predict(*QUICK, api_name="/generate")) < 4.0
    wait_for(lambda: service.gate.active == 0, 10)  # the abandoned stream was closed, not left counted in flight


def test_cancelling_a_generation_frees_the_model_at_once(client, service) -> None:
    job = client.submit(*LONG, api_name="/generate")
    wait_for(lambda: job.status().progress_data)  # denoising has begun
    job.cancel()
    assert timed(lambda: client.predict(*QUICK, api_name="/generate")) < 4.0  # not after 1,600 more UNet steps
    assert not service.lock.locked()


def test_a_failing_model_call_fails_its_own_request_only(app_url, service, single_objects, tmp_path, monkeypatch):
    classify = service.encoder.classify
    black = tmp_path / "black.png"
    Image.new("RGB", (64, 64)).save(black)

    def out_of_memory_on_black(images, *args, **kwargs):  # as the device would fail on one batch of them
        if any(not image.getbbox() for image in images):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return classify(images, *args, **kwargs)

    monkeypatch.setattr(service.encoder, "classify", out_of_memory_on_black)

    def request(path: Path) -> str:
        try:
            result = Client(app_url, verbose=False).predict(
                handle_file(str(path)), LABELS, "world", api_name="/classify"
            )
            return result["label"]
        except AppError as err:
            return f"error: {err}"

    uploads = [black] + [path for path, _ in single_objects]
    with ThreadPoolExecutor(len(uploads)) as pool:  # together, so they share micro-batches
        answers = list(pool.map(request, uploads))
    assert answers[0].startswith("error: out of memory while running the model"), answers[0]
    assert answers[1:] == [label for _, label in single_objects]


def test_a_model_error_becomes_a_message_and_the_server_carries_on(client, service, monkeypatch) -> None:
    generate = service.generator.generate
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device-side assert triggered at /src/kernels/unet.cu:77")
        return generate(*args, **kwargs)

    monkeypatch.setattr(service.generator, "generate", fails_once)
    with pytest.raises(AppError) as raised:
        client.predict(*QUICK, api_name="/generate")
    message = str(raised.value)
    assert "the model failed on this request (RuntimeError)" in message
    assert "unet.cu" not in message  # the kind of failure, not internals
    assert len(client.predict(*QUICK, api_name="/generate")) == 1  # the next request is served


def test_a_stream_that_breaks_mid_way_ends_with_a_message(client, service, single_objects, monkeypatch) -> None:
    stream = service.captioner.stream

    def breaks(image, *args, **kwargs):
        pieces = stream(image, *args, **kwargs)
        yield next(pieces)
        raise RuntimeError("illegal memory access")

    monkeypatch.setattr(service.captioner, "stream", breaks)
    with pytest.raises(AppError, match=r"the model failed on this request \(RuntimeError\)"):
        client.predict(handle_file(str(single_objects[0][0])), api_name="/caption")
    monkeypatch.undo()
    assert client.predict(handle_file(str(single_objects[0][0])), api_name="/caption")  # served again


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_shuts_down_in_order() -> None:
    port = _free_port()
    server = serve_in_background("shapes", port)
    try:
        url = f"http://127.0.0.1:{port}/"
        running = Client(url, verbose=False).submit(*LONG, api_name="/generate")
        wait_for(lambda: running.status().progress_data)
        waiting = Client(url, verbose=False).submit(*QUICK, api_name="/generate")  # queued behind it
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert server.wait(10) == 0
        assert time.monotonic() - start < 10
    finally:
        if server.poll() is None:
            server.kill()
    for job in (running, waiting):  # each told why, not left hanging or answered with a bare error
        with pytest.raises(Exception, match="(?i)shut|stopped") as raised:
            job.result(timeout=30)
        assert "show_error" not in str(raised.value)
