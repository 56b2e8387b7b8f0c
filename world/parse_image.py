"""Image parser: image -> Scene (background and objects), the judge of generated images.

Each object stays inside its own cell (half-side + jitter < half a cell), so every cell is read on its own:
pixels far from the background colour are foreground; their core colour names the palette colour; the
coverage (alpha) of that colour over the background gives the object's extent (size) and silhouette,
which is matched against scale-free shape templates. Exact on clean renders, tolerant of mild noise and blur.

A strict judge: a blob that is no world shape (its silhouette far from every template, or its bounding box not
square, as an ellipse's) is read as shape `unknown`, and a colour far from every palette colour as colour
`unknown`, never snapped to the nearest; a scene holding an unknown object satisfies no prompt
(`PromptSpec.satisfied_by`). The thresholds sit well outside what clean and noisy renders reach (measured in
tests/test_world.py: template error <= 4.6 clean and <= 9.2 with blur and noise; malformed blobs 17 and up).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from .render import coverage
from .scene import Scene, SceneObject
from .spec import BACKGROUNDS, COLORS, GRID, SHAPES, UNKNOWN, cell_center, cell_side, object_side

TEMPLATE_SIDE = 16  # silhouettes are compared at 16 x 16
FOREGROUND_DISTANCE = 70.0  # RGB distance from the background that marks a pixel as foreground
MIN_AREA_FRACTION = 0.2  # a cell with less foreground than this x (small side)^2 is empty
MAX_SHAPE_ERROR = 12.0  # squared silhouette distance to the best template above which the shape is unknown
MAX_ASPECT = 1.3  # world shapes have near-square bounding boxes; wider or taller blobs are unknown
MAX_COLOR_DISTANCE = 40.0  # RGB distance of the core colour to the nearest palette colour (half the closest pair)

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], np.float32)  # (8, 3)


def _silhouette(alpha: np.ndarray) -> np.ndarray | None:
    """Crop alpha to the bounding box of alpha > 0.5 and resample it to TEMPLATE_SIDE^2 (flattened)."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return None
    crop = alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    img = Image.fromarray(crop, "F").resize((TEMPLATE_SIDE, TEMPLATE_SIDE), Image.BILINEAR)
    return np.asarray(img, np.float32).ravel()


@lru_cache(maxsize=1)
def _templates() -> np.ndarray:
    """(shapes, variants, TEMPLATE_SIDE^2) silhouettes rendered at several scales and sub-pixel offsets."""
    out = []
    for shape in SHAPES:
        variants = []
        for s in (10, 12, 18, 24, 48):
            for off in (0.0, 0.25, 0.5):
                alpha, _, _ = coverage(shape, 32 + off, 32 + off, s, 64)
                variants.append(_silhouette(alpha))
        out.append(np.stack(variants))
    return np.stack(out)


def _to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image, np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"expected a square RGB image, got array of shape {arr.shape}")
    return arr


def parse_background(arr: np.ndarray) -> str:
    """White or black, from the mean brightness of the outer frame (where objects never reach)."""
    frame = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return "white" if frame.mean() > 127.5 else "black"


@lru_cache(maxsize=256)
def _expected_area(shape: str, size: str, side: int) -> float:
    """Pixel area (sum of coverage) of a shape rendered at its nominal size."""
    alpha, _, _ = coverage(shape, side / 2, side / 2, object_side(size, side), side)
    return float(alpha.sum())


def _read_object(patch: np.ndarray, bg: np.ndarray, keep: np.ndarray) -> tuple[str, str, np.ndarray] | None:
    """(colour, shape, alpha) of the one object in `patch`; `keep` masks the pixels that may belong to it."""
    dist = np.linalg.norm(patch - bg, axis=-1) * keep
    if dist.max() <= FOREGROUND_DISTANCE:
        return None
    core = np.median(patch[dist >= 0.85 * dist.max()], axis=0)  # (3,)
    color_distances = np.linalg.norm(_PALETTE - core, axis=1)  # (8,)
    color_idx = int(np.argmin(color_distances))
    direction = _PALETTE[color_idx] - bg
    alpha = np.clip((patch - bg) @ direction / (direction @ direction), 0.0, 1.0) * keep  # (h, w)
    silhouette = _silhouette(alpha)
    if silhouette is None:
        return None
    errors = ((_templates() - silhouette) ** 2).sum(-1).min(-1)  # (shapes,)
    ys, xs = np.nonzero(alpha > 0.5)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    square = max(height, width) <= MAX_ASPECT * min(height, width)
    shape = SHAPES[int(np.argmin(errors))] if errors.min() <= MAX_SHAPE_ERROR and square else UNKNOWN
    color = _PALETTE_NAMES[color_idx] if color_distances.min() <= MAX_COLOR_DISTANCE else UNKNOWN
    return color, shape, alpha


def parse_image(image: Image.Image | np.ndarray) -> Scene:
    """Read a square RGB image of the world back into a Scene: background plus one object per occupied cell.

    Foreground blobs (8-connected) are assigned to the cell holding their centre; blobs in one cell are read as
    one object; a blob spanning several cells (objects run together) is read cell by cell. A blank image parses
    to a Scene with no objects (generated images may be empty).
    """
    arr = _to_array(image)
    side = arr.shape[0]
    background = parse_background(arr)
    bg = np.array(BACKGROUNDS[background], np.float32)
    foreground = np.linalg.norm(arr - bg, axis=-1) > FOREGROUND_DISTANCE  # (W, W)
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3)))
    c = cell_side(side)
    min_area = MIN_AREA_FRACTION * object_side("small", side) ** 2
    cells: dict[int, np.ndarray] = {}  # cell -> mask of the pixels read as that cell's object
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        blob = labels == index
        if blob.sum() < min_area:
            continue
        ys, xs = box
        if max(ys.stop - ys.start, xs.stop - xs.start) > 1.25 * c:  # merged objects: split along cell lines
            for cell in range(GRID * GRID):
                row, col = divmod(cell, GRID)
                part = np.zeros_like(blob)
                part[round(row * c) : round((row + 1) * c), round(col * c) : round((col + 1) * c)] = True
                if (blob & part).sum() >= min_area:
                    cells[cell] = cells.get(cell, np.zeros_like(blob)) | (blob & part)
            continue
        cy, cx = (ys.start + ys.stop) / 2, (xs.start + xs.stop) / 2
        cell = min(int(cy // c), GRID - 1) * GRID + min(int(cx // c), GRID - 1)
        cells[cell] = cells.get(cell, np.zeros_like(blob)) | blob
    objects = []
    for cell, mask in sorted(cells.items()):
        keep = ndimage.binary_dilation(mask, iterations=1)  # anti-aliased rim below the threshold
        ys, xs = np.nonzero(keep)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        read = _read_object(arr[y0:y1, x0:x1], bg, keep[y0:y1, x0:x1].astype(np.float32))
        if read is None:
            continue
        color, shape, alpha = read
        area = float(alpha.sum())
        nominal = shape if shape != UNKNOWN else "square"  # an unknown blob still gets a size, for reports
        small, large = _expected_area(nominal, "small", side), _expected_area(nominal, "large", side)
        size = "large" if area > (small * large) ** 0.5 else "small"
        ay, ax = np.nonzero(alpha > 0.5)
        ccx, ccy = cell_center(cell, side)
        dx = round(x0 + (ax.min() + ax.max() + 1) / 2 - ccx) if len(ax) else 0
        dy = round(y0 + (ay.min() + ay.max() + 1) / 2 - ccy) if len(ay) else 0
        objects.append(SceneObject(size, color, shape, cell, dx, dy))
    return Scene(tuple(objects), background, side)
