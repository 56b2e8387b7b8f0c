"""The shapes world's constants (contract v1, ../shared/world.md): palette, shapes, sizes, grid."""

from __future__ import annotations

WORLD_VERSION = 1
DEFAULT_SIDE = 64
GRID = 3  # a GRID x GRID board of cells

BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (245, 220, 20),
    "green": (30, 170, 50),
    "cyan": (20, 200, 220),
    "blue": (30, 70, 230),
    "purple": (140, 50, 200),
    "pink": (250, 120, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
SIZE_FRACTIONS: dict[str, float] = {"small": 0.55, "large": 0.85}  # object side / cell side
SIZES: tuple[str, ...] = tuple(SIZE_FRACTIONS)
POSITIONS: tuple[str, ...] = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three")
UNKNOWN = "unknown"  # what the image parser calls a shape or colour that is none of the world's
MAX_OBJECTS = 3

#: (colour, shape) pairs that never appear in training images or text.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("purple", "star"),
        ("orange", "cross"),
        ("yellow", "diamond"),
        ("cyan", "triangle"),
        ("pink", "circle"),
        ("green", "square"),
    }
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS)


def plural(shape: str) -> str:
    """Plural of a shape name (`crosses`, otherwise +s)."""
    return shape + ("es" if shape.endswith("s") else "s")


def cell_side(side: int) -> float:
    """Side of one grid cell in pixels."""
    return side / GRID


def object_side(size: str, side: int) -> int:
    """Object side s = round(fraction * cell) in pixels (12 px small, 18 px large at W=64)."""
    return round(SIZE_FRACTIONS[size] * cell_side(side))


def max_jitter(side: int) -> int:
    """J = max(1, round(0.05 * cell)): the largest integer offset of an object from its cell centre."""
    return max(1, round(0.05 * cell_side(side)))


def cell_center(cell: int, side: int) -> tuple[float, float]:
    """Continuous (x, y) centre of a cell, y down."""
    row, col = divmod(cell, GRID)
    c = cell_side(side)
    return (col + 0.5) * c, (row + 0.5) * c
