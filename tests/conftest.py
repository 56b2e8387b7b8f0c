"""Shared fixtures. Tests never reach a model hub: everything is bundled or built here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Ray clusters started by the tests live on 127.0.0.1 only (Ray otherwise advertises the machine's network address,
# which a loopback-bound cluster does not listen on); read when ray is first imported, by every node it starts too
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def encoder():
    """The bundled shapes encoder on CPU, loaded once."""
    from triptych import clip

    return clip.load("shapes", device="cpu")


@pytest.fixture(scope="session")
def service(encoder):
    """Every bundled capability on the one session encoder."""
    from triptych import diffusion, vlm
    from triptych.apps.serve.service import Service
    from triptych.core.resolve import resolve

    return Service(
        resolve("shapes"),
        encoder,
        vlm.load("shapes", encoder=encoder),
        diffusion.load("shapes", encoder=encoder),
    )


@pytest.fixture(scope="session")
def app_url(service):
    """The Gradio app on a free local port, serving `service` until the session ends."""
    import socket

    from triptych.apps.serve.app import build_app, launch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(service)
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
