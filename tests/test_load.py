"""`triptych serve` as its own process under 16 concurrent API clients for 60 s, with a bad-upload client."""

from __future__ import annotations

import socket

import pytest

from triptych.apps.benchmarks.load import run_load, serve_in_background


@pytest.mark.slow
def test_sixteen_clients_for_a_minute_see_no_errors() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve_in_background("shapes", port)
    try:
        report = run_load(f"http://127.0.0.1:{port}/", clients=16, seconds=60)
    finally:
        server.terminate()
        server.wait(30)
    assert report.errors == []
    assert report.bad_unclear == [] and report.bad_clear >= 10
    assert set(report.latencies) == {"/classify", "/ask", "/caption", "/generate"}  # every endpoint served
    assert max(report.probe) < 5.0, report.probe  # the page stays responsive under load
