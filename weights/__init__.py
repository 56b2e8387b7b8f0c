"""Weights: the bundled `shapes` preset, its training recipes, and the shapes world they learn from."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
SHAPES_DIR = WEIGHTS_DIR / "shapes"
