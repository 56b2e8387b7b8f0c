"""Shared fixtures. Tests never reach a model hub: everything is bundled or built here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def encoder():
    """The bundled shapes encoder on CPU, loaded once."""
    import clip

    return clip.load("shapes", device="cpu")
