"""Render scenes to anti-aliased RGB images at any side W (supersampled coverage, box-downsampled)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

from .scene import Scene, SceneObject
from .spec import BACKGROUNDS, COLORS, cell_center, object_side

SUPERSAMPLE = 4


def shape_polygon(shape: str, cx: float, cy: float, s: float) -> np.ndarray | None:
    """Vertices (V, 2) of a polygonal shape, or None for circle/square/cross (tested directly)."""
    h = s / 2
    if shape == "triangle":
        return np.array([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)])
    if shape == "diamond":
        return np.array([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)])
    if shape == "star":
        pts = []
        for k in range(10):
            r = h if k % 2 == 0 else 0.45 * h
            a = math.radians(-90 + 36 * k)
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return np.array(pts)
    return None


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon for arrays of points."""
    inside = np.zeros(x.shape, dtype=bool)
    x0, y0 = poly[-1]
    for x1, y1 in poly:
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
        x0, y0 = x1, y1
    return inside


def inside_shape(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """Boolean mask: which points (x, y) lie inside the shape of side s centred at (cx, cy)."""
    h = s / 2
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= h * h
    if shape == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "cross":
        t = s / 6  # half the bar thickness (s/3)
        in_box = (np.abs(dx) <= h) & (np.abs(dy) <= h)
        return in_box & ((np.abs(dx) <= t) | (np.abs(dy) <= t))
    poly = shape_polygon(shape, cx, cy, s)
    if poly is None:
        raise ValueError(f"unknown shape {shape!r}")
    return _inside_polygon(x, y, poly)


def coverage(shape: str, cx: float, cy: float, s: float, side: int) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage in [0, 1] of a shape over the pixels of its bounding box.

    Returns (alpha (H, W) float32, x0, y0), the box's top-left pixel.
    """
    h = s / 2
    x0, y0 = max(0, math.floor(cx - h) - 1), max(0, math.floor(cy - h) - 1)
    x1, y1 = min(side, math.ceil(cx + h) + 1), min(side, math.ceil(cy + h) + 1)
    ss = SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * ss) + 0.5) / ss  # sub-pixel centres
    ys = y0 + (np.arange((y1 - y0) * ss) + 0.5) / ss
    gx, gy = np.meshgrid(xs, ys)
    hit = inside_shape(shape, gx, gy, cx, cy, s).astype(np.float32)
    alpha = hit.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))  # box-downsample
    return alpha, x0, y0


def object_geometry(obj: SceneObject, scene_side: int, side: int) -> tuple[float, float, int]:
    """(cx, cy, s) of an object rendered at `side`, its jitter scaled from the scene's own side."""
    cx, cy = cell_center(obj.cell, side)
    scale = side / scene_side
    return cx + obj.dx * scale, cy + obj.dy * scale, object_side(obj.size, side)


@lru_cache(maxsize=64)
def _background(name: str, side: int) -> np.ndarray:
    return np.broadcast_to(np.array(BACKGROUNDS[name], np.float32), (side, side, 3))


def render_array(scene: Scene, side: int | None = None) -> np.ndarray:
    """Render to a (W, W, 3) uint8 array."""
    side = side or scene.side
    if side < 12:
        raise ValueError(f"side must be at least 12 pixels, got {side}")
    img = _background(scene.background, side).copy()
    for obj in scene.objects:
        cx, cy, s = object_geometry(obj, scene.side, side)
        alpha, x0, y0 = coverage(obj.shape, cx, cy, s, side)
        h, w = alpha.shape
        a = alpha[..., None]
        region = img[y0 : y0 + h, x0 : x0 + w]
        region[...] = region * (1 - a) + np.array(COLORS[obj.color], np.float32) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene: Scene, side: int | None = None) -> Image.Image:
    """Render a scene to an RGB PIL image of side `side` (default: the scene's own)."""
    return Image.fromarray(render_array(scene, side), "RGB")
