"""The app on Ray Serve (`triptych serve --ray`), against a real local Ray instance on 127.0.0.1: every named
endpoint through gradio_client, the same answers and the same error messages as the single-process app, and a
killed encoder replica that costs no client a failed request and comes back."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray  # the [distributed] extra, which `make` and CI install (dev)
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from ray import serve

from tests.test_app import FAST, OBJECT_LABELS, generate_args
from triptych.apps.serve import cluster
from triptych.apps.serve.app import build_app, launch
from triptych.world import render, sample_scene

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory):
    """Ray on this machine, the bundled config deployed (two encoder replicas), and the front end on a free port."""
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    service, deployed = cluster.deploy(cluster.read_config(), "shapes", None)
    assert deployed
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(service)
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", service
    app.close()
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-uploads")
    paths = []
    for i in range(4):
        path = folder / f"scene-{i}.png"
        render(sample_scene(700 + i, num_objects=1)).save(path)
        paths.append(path)
    return paths


def test_every_endpoint_answers_as_the_single_process_app(ray_url, app_url, pictures):
    url, service = ray_url
    remote, local = Client(url, verbose=False), Client(app_url, verbose=False)
    image = handle_file(str(pictures[0]))
    for args, endpoint in (
        ((image, OBJECT_LABELS, "world"), "/classify"),
        ((image,), "/caption"),
        ((image, "how many objects are there?"), "/ask"),
    ):
        assert remote.predict(*args, api_name=endpoint) == local.predict(*args, api_name=endpoint)
    drawn = remote.predict(*generate_args("a large red circle"), api_name="/generate")
    assert [item["image"] for item in drawn] and len(drawn) == 2
    assert len(remote.predict(image, 2, *FAST.values(), api_name="/variations")) == 2
    blended = remote.predict("a red circle", "", None, 1.0, 0.0, 0.0, 1, *FAST.values(), api_name="/interpolate")
    assert len(blended) == 1
    assert "Ray Serve" in service.about() and "| Encoder | 2 |" in service.about()


@pytest.mark.parametrize(
    ("args", "endpoint"),
    [
        (("PICTURE", " , ,", "world"), "/classify"),
        (("PICTURE", "   "), "/ask"),
        (generate_args("", num_images=1), "/generate"),
        (generate_args("a red circle", scheduler="euler"), "/generate"),
        (("", "", None, 0.5, 0.5, 0.0, 1, *FAST.values()), "/interpolate"),
    ],
)
def test_bad_input_gets_the_same_message(ray_url, app_url, pictures, args, endpoint):
    args = tuple(handle_file(str(pictures[1])) if a == "PICTURE" else a for a in args)
    messages = []
    for url in (ray_url[0], app_url):
        with pytest.raises(AppError) as caught:
            Client(url, verbose=False).predict(*args, api_name=endpoint)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_concurrent_generations_batch_and_keep_their_seeds_images(ray_url, app_url):
    """Four clients generating at once: the Generator deployment joins them into batches, and each client gets the
    images its seed gives in the single-process app (to one level of 255 on 99 % of pixels: batched float
    arithmetic can shift a few edge pixels of the spatial generator's shapes by a few levels, measured up to 7)."""
    import numpy as np
    from PIL import Image

    from triptych.apps.serve.remote import call

    url, _ = ray_url
    requests = [("a large red circle", 3), ("a blue star", 4), ("a green square", 5), ("a large red circle", 6)]

    def draw(where: str, prompt: str, seed: int) -> list:
        gallery = Client(where, verbose=False).predict(*generate_args(prompt, seed=seed), api_name="/generate")
        return [np.asarray(Image.open(item["image"]).convert("RGB"), dtype=int) for item in gallery]

    with ThreadPoolExecutor(4) as pool:
        remote = list(pool.map(lambda r: draw(url, *r), requests))
    local = [draw(app_url, *r) for r in requests]
    for mine, theirs in zip(remote, local, strict=True):
        assert len(mine) == 2
        for a, b in zip(mine, theirs):  # batched arithmetic may move a shape's edge pixels by a few levels, no more
            off = np.abs(a - b)
            assert (off > 1).mean() <= 0.01 and off.max() <= 16, (off.max(), (off > 1).mean())
    generator = serve.get_deployment_handle("Generator", app_name=cluster.APP_NAME)
    assert max(call(generator.recent_batches)) > 1


def test_concurrent_caption_streams_decode_together_and_each_gets_its_own(ray_url, app_url, pictures):
    """Four clients streaming captions at once (one batched stream in the Captioner deployment), one of them with a
    broken upload: each good stream ends in the single-process app's caption, streamed in pieces; the bad one gets
    its own error."""
    url, _ = ray_url
    broken = pictures[0].parent / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    def stream(path) -> tuple:
        job = Client(url, verbose=False).submit(handle_file(str(path)), api_name="/caption")
        try:
            return job.result(timeout=120), job.outputs()
        except AppError as err:
            return str(err), None

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(stream, [*pictures, broken]))
    local = Client(app_url, verbose=False)
    for path, (final, updates) in zip(pictures, results[:4], strict=True):
        assert final == local.predict(handle_file(str(path)), api_name="/caption")
        assert len(updates) > 2 and all(b.startswith(a) for a, b in zip(updates, updates[1:]))
    assert results[4][1] is None and "not a readable image" in results[4][0]
    # requests that arrive together decode as one batch (through the handle: uploads spread the app's arrivals)
    from triptych.apps.serve.remote import call

    handle = serve.get_deployment_handle("Captioner", app_name=cluster.APP_NAME)
    streams = cluster.RemoteCaptioner(handle)
    start = threading.Barrier(4)

    def together(path) -> str:
        start.wait()
        return "".join(streams.stream(path))

    with ThreadPoolExecutor(4) as pool:
        finals = list(pool.map(together, pictures))
    assert finals == [final for final, _ in results[:4]]
    assert max(call(handle.recent_batches)) > 1


def encoder_replica_pids() -> list[int]:
    """Processes of the encoder's replicas, by the title Ray gives them (ray::ServeReplica:triptych:Encoder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if proc.name.isdigit() and title.startswith(b"ray::ServeReplica:triptych:Encoder"):
            pids.append(int(proc.name))
    return pids


def running_encoders() -> int:
    return serve.status().applications[cluster.APP_NAME].deployments["Encoder"].replica_states.get("RUNNING", 0)


def test_a_killed_encoder_replica_fails_no_client_and_comes_back(ray_url, pictures):
    """16 clients classify while one of the two encoder replicas is killed (SIGKILL, as a lost node would): every
    request still gets its answer (the front end retries what the dead replica held), and Serve starts a new one."""
    url, _ = ray_url
    pids = encoder_replica_pids()
    assert len(pids) == 2 and running_encoders() == 2
    clients = [Client(url, verbose=False) for _ in range(16)]
    killed = threading.Event()
    answers: list[str] = []

    def work(client: Client) -> None:
        for i in range(6):
            result = client.predict(handle_file(str(pictures[i % 4])), OBJECT_LABELS, "world", api_name="/classify")
            answers.append(result["label"])
            if i == 2 and not killed.is_set():
                killed.set()
                os.kill(pids[0], signal.SIGKILL)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, clients))  # re-raises any client's failure
    assert killed.is_set() and len(answers) == 96
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (running_encoders() == 2 and pids[0] not in encoder_replica_pids()):
        time.sleep(1)
    assert running_encoders() == 2 and pids[0] not in encoder_replica_pids()


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
class DiesOnce:
    """A replica that dies (SIGKILL) in the middle of the first request any replica receives."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def answer(self, value: int) -> tuple:
        try:
            self.marker.touch(exist_ok=False)  # the first request anywhere: die holding it
        except FileExistsError:
            return ("ok", value * 2)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def test_a_request_whose_replica_dies_under_it_is_sent_again(ray_url, tmp_path):
    """The front end's retry, proved on a request that is in flight when its replica dies: without the retry the
    caller gets Ray's ActorDiedError; with it, the answer (from the other replica, or the replacement)."""
    from triptych.apps.serve.remote import call

    handle = serve.run(DiesOnce.bind(str(tmp_path / "died")), name="dies-once", route_prefix=None)
    try:
        assert call(handle.answer, 21) == 42
        assert (tmp_path / "died").exists()
    finally:
        serve.delete("dies-once")
