"""Load and soak tests of a running app, every answer checked against the shapes world's truth.

Load: N concurrent gradio_client users on every endpoint for a fixed time, one extra client sending bad uploads,
and a probe timing the page meanwhile. Good clients must get right answers (the true top label, the true count,
the canonical caption, a generated image that holds an object), the bad one only clear errors; a thread that
fails in any way is a finding, never a silent end.

Soak: N mixed requests (classify, ask, caption, a few-step generation, bad uploads), each from a new client session
as one-off API users make them, against a `triptych serve` process; the server's resident memory after warm-up
and at the end must stay within a budget.

triptych-benchmark load --clients 16 --seconds 60        (starts its own server on a free port)
triptych-benchmark load --url http://127.0.0.1:7860/      (an app already running)
triptych-benchmark load --ray --seconds 30                (serve vs serve --ray with 1 and 2 replicas, one table)
triptych-benchmark soak --requests 2000                   (starts its own server, measures its memory)
"""

from __future__ import annotations

import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from gradio_client import Client, handle_file
from PIL import Image

from triptych.world import ALL_PAIRS, Scene, caption, parse_image, question_answers, render, sample_scene

ENDPOINTS = ("/classify", "/ask", "/caption", "/generate")
SOAK_MIX = (*ENDPOINTS, "bad upload")
LABELS = ", ".join(f"a {color} {shape}" for color, shape in ALL_PAIRS)
QUESTIONS = ("count", "background")
SEEDS, STEPS = 8, 10  # generations cycle through these seeds at these steps: each holds an object (blank: a finding)
BAD_UPLOADS = {  # name -> (file content, a phrase the error must contain)
    "corrupt.png": (b"\x89PNG\r\n\x1a\n this is not really a png", "not a readable image"),
    "notes.txt": (b"plain text, wrong type", "not a readable image"),
    "empty.png": (b"", "0 bytes"),
    "oversized.png": (b"\0" * (11 * 1024 * 1024), "too large|size|413"),
}


@dataclass(frozen=True)
class Case:
    """One request and its judge: `check(answer)` is None when the answer is right, else what is wrong."""

    endpoint: str
    args: tuple
    check: Callable[[object], str | None]
    error: str | None = None  # for a bad upload: a phrase its error must contain (and no answer is right)


class World:
    """World scenes saved as uploads, and the requests about them with their true answers."""

    def __init__(self, folder: Path, count: int = 8) -> None:
        rng = random.Random(2026)
        self.single = [self._save(folder, f"single-{i}", sample_scene(rng, num_objects=1)) for i in range(count)]
        self.mixed = [self._save(folder, f"mixed-{i}", sample_scene(rng)) for i in range(count)]
        self.bad = []
        for name, (data, phrase) in BAD_UPLOADS.items():
            (folder / name).write_bytes(data)
            self.bad.append((folder / name, phrase))

    @staticmethod
    def _save(folder: Path, name: str, scene: Scene) -> tuple[Path, Scene]:
        path = folder / f"{name}.png"
        render(scene).save(path)
        return path, scene

    def case(self, kind: str, n: int) -> Case:
        """The n-th request of a kind (ENDPOINTS or "bad upload"), cycling through the scenes."""

        if kind == "/classify":
            path, scene = self.single[n % len(self.single)]
            truth = f"a {scene.objects[0].color} {scene.objects[0].shape}"
            return Case(kind, (handle_file(str(path)), LABELS, "world"), lambda got: _differs(got["label"], truth))
        if kind in ("/ask", "/caption"):
            path, scene = self.mixed[n % len(self.mixed)]
            if kind == "/caption":
                return Case(kind, (handle_file(str(path)),), lambda got: _differs(got, caption(scene)))
            question, truth = question_answers(scene, QUESTIONS[n % len(QUESTIONS)], random.Random(n))
            return Case(kind, (handle_file(str(path)), question), lambda got: _differs(got, truth))
        if kind == "/generate":
            args = ("a red circle", "", 1, 1, n % SEEDS, STEPS, 4.0, STEPS, 4.0, "ddim")
            return Case(kind, args, _holds_an_object)
        path, phrase = self.bad[n % len(self.bad)]
        return Case("/classify", (handle_file(str(path)), LABELS, "world"), lambda got: "accepted", error=phrase)


def _differs(got: object, truth: str) -> str | None:
    return None if got == truth else f"answered {got!r}, the truth is {truth!r}"


def _holds_an_object(gallery: object) -> str | None:

    if not isinstance(gallery, list) or len(gallery) != 1:
        return f"expected one image, got {gallery!r}"
    return judge_generated([Image.open(gallery[0]["image"]).convert("RGB")])


def judge_generated(images: list, color: str | None = None, shape: str | None = None) -> str | None:
    """Generated images read back by the world's image parser: None when every one holds an object (a black or
    blank image does not) and, given `color` and `shape`, at least half hold that object; else what is wrong."""
    scenes = [parse_image(image) for image in images]
    if not all(scene.objects for scene in scenes):
        return f"a generated image holds no object (blank): {[scene.objects for scene in scenes]}"
    hits = sum(any((o.color, o.shape) == (color, shape) for o in scene.objects) for scene in scenes)
    if color is not None and hits < len(images) / 2:
        return f"only {hits} of {len(images)} images show a {color} {shape}: {[scene.objects for scene in scenes]}"
    return None


def run_case(client, case: Case) -> str | None:
    """Send one request; None when it was answered right (or, for a bad upload, refused clearly)."""
    try:
        answer = client.predict(*case.args, api_name=case.endpoint)
    except Exception as err:
        if case.error is not None and re.search(case.error, str(err), re.IGNORECASE):
            return None
        return f"{type(err).__name__}: {err}"
    problem = case.check(answer)
    return None if problem is None else f"{case.endpoint}: {problem}"


def guarded(target: Callable[..., None], errors: list[str], lock: threading.Lock) -> Callable[..., None]:
    """`target` for a thread: any exception it raises is recorded as a finding instead of ending it silently."""

    def run(*args) -> None:
        try:
            target(*args)
        except Exception as err:
            with lock:
                errors.append(f"{target.__name__} died: {type(err).__name__}: {err}")

    return run


# ---------------------------------------------------------------- load
@dataclass
class LoadReport:
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # failures and wrong answers of good clients, dead threads
    bad_clear: int = 0  # bad uploads refused with a clear error
    bad_unclear: list[str] = field(default_factory=list)  # bad uploads accepted or refused unclearly
    probe: list[float] = field(default_factory=list)  # page load times while under load

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and not self.bad_unclear
            and self.bad_clear > 0
            and sum(map(len, self.latencies.values())) > 0
        )

    def rows(self) -> list[tuple[str, str]]:
        rows = [
            (f"{endpoint}: requests, p50 / p95 / max s", _spread(times)) for endpoint, times in self.latencies.items()
        ]
        total = sum(map(len, self.latencies.values()))
        probe = f"{statistics.median(self.probe):.3f} / {max(self.probe):.3f}" if self.probe else "none"
        return rows + [
            ("requests in all (per second)", f"{total} ({total / self.seconds:.1f}/s)"),
            ("errors and wrong answers seen by good clients", str(len(self.errors))),
            ("bad uploads refused clearly / not", f"{self.bad_clear} / {len(self.bad_unclear)}"),
            ("page load while loaded: median / max s", probe),
        ]


def _spread(times: list[float]) -> str:
    p50, p95 = statistics.median(times), sorted(times)[int(0.95 * (len(times) - 1))]
    return f"{len(times)}, {p50:.2f} / {p95:.2f} / {max(times):.2f}"


def _good_client(url: str, index: int, world: World, deadline: float, report: LoadReport, lock) -> None:

    client = Client(url, verbose=False)
    n = index
    while time.monotonic() < deadline:
        case = world.case(ENDPOINTS[n % len(ENDPOINTS)], n)
        n += 1
        start = time.monotonic()
        problem = run_case(client, case)
        with lock:
            if problem is None:
                report.latencies.setdefault(case.endpoint, []).append(time.monotonic() - start)
            else:
                report.errors.append(problem)


def _bad_client(url: str, world: World, deadline: float, report: LoadReport, lock) -> None:

    client = Client(url, verbose=False)
    n = 0
    while time.monotonic() < deadline:
        problem = run_case(client, world.case("bad upload", n))
        n += 1
        with lock:
            if problem is None:
                report.bad_clear += 1
            else:
                report.bad_unclear.append(problem)
        time.sleep(0.2)


def _probe(url: str, deadline: float, report: LoadReport) -> None:

    while time.monotonic() < deadline:
        start = time.monotonic()
        httpx.get(url, timeout=60).raise_for_status()
        report.probe.append(time.monotonic() - start)
        time.sleep(0.5)


def run_load(url: str, clients: int = 16, seconds: float = 60.0) -> LoadReport:
    """Drive the app at `url`; returns what every client saw."""
    report, lock = LoadReport(seconds), threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        deadline = time.monotonic() + seconds
        targets = [(_good_client, (url, i, world, deadline, report, lock)) for i in range(clients)]
        targets += [(_bad_client, (url, world, deadline, report, lock)), (_probe, (url, deadline, report))]
        threads = [threading.Thread(target=guarded(fn, report.errors, lock), args=args) for fn, args in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return report


# ---------------------------------------------------------------- soak
@dataclass
class SoakReport:
    requests: int
    warmup: int
    rss_warm_mib: float = 0.0  # the server's resident memory after the warm-up requests
    rss_end_mib: float = 0.0
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # wrong answers, unclear refusals, failures, dead threads

    @property
    def growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_warm_mib

    def ok(self, max_growth_mib: float) -> bool:
        served = sum(map(len, self.latencies.values()))
        return not self.errors and served == self.warmup + self.requests and self.growth_mib < max_growth_mib

    def rows(self) -> list[tuple[str, str]]:
        rows = [(f"{kind}: requests, p50 / p95 / max s", _spread(times)) for kind, times in self.latencies.items()]
        return rows + [
            ("requests after warm-up (warm-up), each a new session", f"{self.requests} ({self.warmup})"),
            ("time for all of them", f"{self.seconds / 60:.1f} min"),
            ("errors and wrong answers", str(len(self.errors))),
            ("server RSS after warm-up", f"{self.rss_warm_mib:.1f} MiB"),
            ("server RSS at the end", f"{self.rss_end_mib:.1f} MiB"),
            (f"growth over {self.requests} requests", f"{self.growth_mib:+.1f} MiB"),
        ]


def run_soak(url: str, server_pid: int, requests: int = 2000, warmup: int = 200, clients: int = 4) -> SoakReport:
    """`warmup` then `requests` requests of SOAK_MIX in turn, `clients` at a time, each from a new client session;
    the RSS of process `server_pid` is read after the warm-up and at the end."""

    server, report, lock = psutil.Process(server_pid), SoakReport(requests, warmup), threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))

        def worker(indices) -> None:
            for n in indices:  # shared by the workers: each index is taken once, by whichever worker is free
                case = world.case(SOAK_MIX[n % len(SOAK_MIX)], n // len(SOAK_MIX))
                client, start = Client(url, verbose=False), time.monotonic()
                try:
                    problem = run_case(client, case)
                finally:
                    client.close()
                with lock:
                    kind = "bad upload" if case.error else case.endpoint
                    report.latencies.setdefault(kind, []).append(time.monotonic() - start)
                    if problem is not None:
                        report.errors.append(f"request {n}: {problem}")

        def phase(first: int, stop: int) -> None:
            indices = iter(range(first, stop))
            threads = [
                threading.Thread(target=guarded(worker, report.errors, lock), args=(indices,)) for _ in range(clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        phase(0, warmup)
        report.rss_warm_mib = server.memory_info().rss / 2**20
        start = time.monotonic()
        phase(warmup, warmup + requests)
        report.seconds = time.monotonic() - start
        report.rss_end_mib = server.memory_info().rss / 2**20
    return report


def ray_config(replicas: int, folder: Path) -> Path:
    """The bundled Ray Serve config with `replicas` encoders, captioners and generators, written to `folder`."""
    import yaml

    from triptych.apps.serve.cluster import DEFAULT_CONFIG

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for deployment in data["applications"][0]["deployments"]:
        if deployment["name"] != "Gateway":
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = replicas
    path = folder / f"ray_serve_{replicas}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def compare_serving(preset: str, port: int, clients: int, seconds: float) -> list[tuple[str, str]]:
    """The load test against `triptych serve`, then `triptych serve --ray` with 1 and 2 replicas of each model
    deployment (Ray started by each server on this machine), side by side."""
    rows: list[tuple[str, str]] = [("clients / seconds per setup", f"{clients} / {seconds:g}")]
    with tempfile.TemporaryDirectory() as tmp:
        setups = [("serve", ())]
        setups += [(f"serve --ray, {n} replica{'s' * (n > 1)}", ("--ray", "--config", str(ray_config(n, Path(tmp)))))
                   for n in (1, 2)]  # fmt: skip
        for name, extra in setups:
            server = serve_in_background(preset, port, extra)
            try:
                report = run_load(f"http://127.0.0.1:{port}/", clients, seconds)
            finally:
                server.terminate()
                server.wait(60)
            total = sum(map(len, report.latencies.values()))
            rows.append((f"{name}: requests/s", f"{total / seconds:.1f}"))
            rows += [(f"{name}: {endpoint} requests, p50 / p95 / max s", _spread(times))
                     for endpoint, times in report.latencies.items()]  # fmt: skip
            rows.append((f"{name}: errors and wrong answers", str(len(report.errors))))
    return rows


def serve_in_background(preset: str = "shapes", port: int = 7861, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`triptych serve` (with `extra` arguments) as a child process; returns once the page answers."""

    command = [sys.executable, "-m", "triptych.apps.cli.main", "serve", "--preset", preset, "--port", str(port)]
    command += list(extra)
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(1)
    server.kill()
    raise RuntimeError("the server did not come up within 300 s")
