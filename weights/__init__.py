"""Data only: the bundled `shapes` weights, their training recipes and example images (no code beyond their paths)."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
SHAPES_DIR = WEIGHTS_DIR / "shapes"
