"""One resolver for every loader: the same name means the same folders to clip.load, vlm.load, diffusion.load and
the app's Service."""

from __future__ import annotations

from pathlib import Path

import pytest

from triptych import clip, diffusion, vlm
from triptych.core.errors import WeightsError
from triptych.core.resolve import Parts, resolve
from triptych.weights import SHAPES_DIR


@pytest.fixture(scope="module")
def our_layout(tmp_path_factory) -> Path:
    """A folder in our own layout (clip/ vlm/ diffusion/), linked to the bundled parts."""
    root = tmp_path_factory.mktemp("ours")
    for part in ("clip", "vlm", "diffusion"):
        (root / part).symlink_to(SHAPES_DIR / part, target_is_directory=True)
    return root


def test_each_kind_of_name_resolves_to_its_parts(our_layout: Path) -> None:
    shapes = resolve("shapes")
    assert (shapes.encoder, shapes.vlm, shapes.generator) == (
        str(SHAPES_DIR / "clip"),
        SHAPES_DIR / "vlm",
        SHAPES_DIR / "diffusion",
    )
    ours = resolve(str(our_layout))
    assert (ours.encoder, ours.vlm, ours.generator) == (
        str(our_layout / "clip"),
        our_layout / "vlm",
        our_layout / "diffusion",
    )
    assert resolve(str(SHAPES_DIR / "vlm")) == Parts(str(SHAPES_DIR / "vlm"), vlm=SHAPES_DIR / "vlm")
    assert resolve(str(SHAPES_DIR / "diffusion")).generator == SHAPES_DIR / "diffusion"
    assert resolve(f"local-dir:{SHAPES_DIR / 'clip'}").encoder == str(SHAPES_DIR / "clip")
    assert resolve("ViT-B-32:openai") == Parts("ViT-B-32:openai", encoder="ViT-B-32:openai")
    assert resolve(ours) is ours


def test_every_loader_reads_the_same_parts(our_layout: Path) -> None:
    parts = resolve(str(our_layout))
    encoder = clip.load(parts, device="cpu")
    assert encoder.name == str(our_layout)
    assert vlm.load(parts, encoder=encoder).name == str(our_layout)
    assert diffusion.load(parts, encoder=encoder).encoder is encoder


def test_a_missing_part_or_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="holds no vlm"):
        vlm.load("ViT-B-32:openai")
    with pytest.raises(WeightsError, match="holds no generator: .*generator.json.*it holds: vlm"):
        diffusion.load(str(SHAPES_DIR / "vlm"))
    with pytest.raises(WeightsError, match="folder not found"):
        vlm.load(str(tmp_path / "typo"))
    with pytest.raises(WeightsError, match="non-empty text"):
        resolve("  ")
