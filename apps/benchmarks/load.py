"""Load test: N concurrent gradio_client users on every endpoint for a fixed time, one extra client sending bad
uploads, and a probe timing the page meanwhile. Good clients must see no errors, the bad one only clear errors.

triptych-benchmark load --clients 16 --seconds 60            (starts its own server on a free port)
triptych-benchmark load --url http://127.0.0.1:7860/          (an app already running)
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from triptych.world import render, sample_scene

ENDPOINTS = ("/classify", "/ask", "/caption", "/generate")
BAD_UPLOADS = {  # name -> (file content, a phrase the error must contain)
    "corrupt.png": (b"\x89PNG\r\n\x1a\n this is not really a png", "not a readable image"),
    "notes.txt": (b"plain text, wrong type", "not a readable image"),
    "empty.png": (b"", "0 bytes"),
    "oversized.png": (b"\0" * (11 * 1024 * 1024), "too large|size|413"),
}


@dataclass
class LoadReport:
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # from good clients: must stay empty
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
        rows = []
        for endpoint, times in self.latencies.items():
            if times:
                p50, p95 = statistics.median(times), sorted(times)[int(0.95 * (len(times) - 1))]
                rows.append(
                    (
                        f"{endpoint}: requests, p50 / p95 / max s",
                        f"{len(times)}, {p50:.2f} / {p95:.2f} / {max(times):.2f}",
                    )
                )
        total = sum(map(len, self.latencies.values()))
        rows += [
            ("requests in all (per second)", f"{total} ({total / self.seconds:.1f}/s)"),
            ("errors seen by good clients", str(len(self.errors))),
            ("bad uploads refused clearly / not", f"{self.bad_clear} / {len(self.bad_unclear)}"),
            ("page load while loaded: median / max s", f"{statistics.median(self.probe):.3f} / {max(self.probe):.3f}"),
        ]
        return rows


def _scene_files(folder: Path, count: int) -> list[Path]:

    rng = random.Random(2026)
    paths = []
    for i in range(count):
        path = folder / f"scene-{i}.png"
        render(sample_scene(rng)).save(path)
        paths.append(path)
    return paths


def _good_client(url: str, index: int, images: list[Path], deadline: float, report: LoadReport, lock) -> None:

    client = Client(url, verbose=False)
    rng = random.Random(index)
    n = index
    while time.monotonic() < deadline:
        endpoint, image = ENDPOINTS[n % len(ENDPOINTS)], handle_file(str(rng.choice(images)))
        n += 1
        args = {
            "/classify": (image, "a red circle, a blue square, a green star", "world"),
            "/ask": (image, "how many objects are there?"),
            "/caption": (image,),
            "/generate": ("a red circle", "", 1, 1, rng.randrange(1000), 10, 4.0, 10, 4.0, "ddim"),
        }[endpoint]
        start = time.monotonic()
        try:
            client.predict(*args, api_name=endpoint)
        except Exception as err:  # every failure of a good request is a finding
            with lock:
                report.errors.append(f"{endpoint}: {type(err).__name__}: {err}")
            continue
        with lock:
            report.latencies.setdefault(endpoint, []).append(time.monotonic() - start)


def _bad_client(url: str, folder: Path, deadline: float, report: LoadReport, lock) -> None:

    client = Client(url, verbose=False)
    files = []
    for name, (data, phrase) in BAD_UPLOADS.items():
        (folder / name).write_bytes(data)
        files.append((folder / name, phrase))
    n = 0
    while time.monotonic() < deadline:
        path, phrase = files[n % len(files)]
        n += 1
        try:
            client.predict(handle_file(str(path)), "a red circle, a blue square", "world", api_name="/classify")
            outcome = f"{path.name}: accepted"
        except Exception as err:
            outcome = None if re.search(phrase, str(err), re.IGNORECASE) else f"{path.name}: unclear error {err!r}"
        with lock:
            if outcome is None:
                report.bad_clear += 1
            else:
                report.bad_unclear.append(outcome)
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
        folder = Path(tmp)
        images = _scene_files(folder, 8)
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_good_client, args=(url, i, images, deadline, report, lock)) for i in range(clients)
        ]
        threads.append(threading.Thread(target=_bad_client, args=(url, folder, deadline, report, lock)))
        threads.append(threading.Thread(target=_probe, args=(url, deadline, report)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return report


def serve_in_background(preset: str = "shapes", port: int = 7861) -> subprocess.Popen:
    """`triptych serve` as a child process; returns once the page answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "triptych.apps.cli.main", "serve", "--preset", preset, "--port", str(port)]
    )
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
