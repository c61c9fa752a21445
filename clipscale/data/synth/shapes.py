"""Shape masks, colours, sizes and textures of the synthetic scenes, precomputed once per image size.

Scenes are composited from these precomputed anti-aliased alpha masks with numpy slicing, never drawn
per sample with PIL: that keeps generation above 1,000 images/s at 64 px on one core. Masks are
rasterised by supersampling an implicit inside-test on a fine grid and averaging, so edges are soft
and small shapes (7 px at 32 px images) stay recognisable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
    "cross": "crosses", "ring": "rings", "diamond": "diamonds", "heart": "hearts",
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (40, 175, 55),
    "blue": (35, 70, 225),
    "yellow": (240, 220, 40),
    "cyan": (40, 215, 225),
    "magenta": (220, 45, 205),
    "orange": (245, 135, 20),
    "purple": (115, 45, 170),
    "white": (248, 248, 248),
    "black": (15, 15, 15),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZES: tuple[str, ...] = ("small", "large")
SIZE_FRACTION: dict[str, float] = {"small": 0.22, "large": 0.32}  # of the image side
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
GRID = 3  # objects sit in the cells of a GRID x GRID layout (distinct cells per scene)
SUPERSAMPLE = 8


def _polygon_inside(x: np.ndarray, y: np.ndarray, verts: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd ray-casting point-in-polygon test, vectorised over points."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at)
    return inside


def _star_vertices(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> list[tuple[float, float]]:
    verts = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        theta = np.pi / 2 + k * np.pi / points
        verts.append((r * np.cos(theta), r * np.sin(theta) - 0.08))
    return verts


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    u, v = x * 1.22, y * 1.22 - 0.18
    return (u * u + v * v - 1.0) ** 3 - u * u * v**3 <= 0.0


# Inside tests on [-1, 1]^2 with y pointing up.
_INSIDE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda x, y: x * x + y * y <= 0.92**2,
    "square": lambda x, y: (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8),
    "triangle": lambda x, y: _polygon_inside(x, y, [(0.0, 0.95), (-0.98, -0.8), (0.98, -0.8)]),
    "star": lambda x, y: _polygon_inside(x, y, _star_vertices()),
    "cross": lambda x, y: (((np.abs(x) <= 0.3) & (np.abs(y) <= 0.95))
                           | ((np.abs(y) <= 0.3) & (np.abs(x) <= 0.95))),
    "ring": lambda x, y: (x * x + y * y <= 0.95**2) & (x * x + y * y >= 0.52**2),
    "diamond": lambda x, y: np.abs(x) / 0.8 + np.abs(y) / 0.98 <= 1.0,
    "heart": _heart,
}


def rasterize(shape: str, side: int) -> np.ndarray:
    """Anti-aliased alpha mask in [0, 1], float32 (side, side), row 0 at the top."""
    n = side * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    x, y = np.meshgrid(coords, -coords)
    inside = _INSIDE[shape](x, y).astype(np.float32)
    return inside.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE).mean(axis=(1, 3))


def texture_pattern(texture: str, side: int, image_size: int) -> np.ndarray:
    """Brightness multiplier (side, side): stripes and dots have a period of ~2 px at 32 px."""
    period = max(2, image_size // 16)
    rows, cols = np.mgrid[0:side, 0:side]
    if texture == "plain":
        return np.ones((side, side), dtype=np.float32)
    if texture == "striped":
        return np.where((rows // (period // 2 or 1)) % 2 == 0, 1.0, 0.45).astype(np.float32)
    dots = ((rows % period) < max(1, period // 2)) & ((cols % period) < max(1, period // 2))
    return np.where(dots, 0.4, 1.0).astype(np.float32)


def object_side(size: str, image_size: int) -> int:
    return max(5, round(SIZE_FRACTION[size] * image_size))


@dataclass(frozen=True)
class MaskBank:
    """Per (shape, size, texture): alpha (h, w, 1) and alpha*texture (h, w, 1), float32."""

    image_size: int
    alpha: dict[tuple[str, str], np.ndarray]
    shaded: dict[tuple[str, str, str], np.ndarray]
    noise: np.ndarray  # (2S, 2S, 3) float32 background/sensor noise to crop from


@functools.lru_cache(maxsize=4)
def mask_bank(image_size: int) -> MaskBank:
    """Built once per process and image size (~10 ms); fixed content, so output is deterministic."""
    alpha: dict[tuple[str, str], np.ndarray] = {}
    shaded: dict[tuple[str, str, str], np.ndarray] = {}
    for size in SIZES:
        side = object_side(size, image_size)
        for shape in SHAPES:
            a = rasterize(shape, side)[:, :, None]
            alpha[shape, size] = a
            for texture in TEXTURES:
                shaded[shape, size, texture] = a * texture_pattern(texture, side, image_size)[:, :, None]
    noise_rng = np.random.default_rng(20261122)
    noise = noise_rng.normal(0.0, 9.0, size=(2 * image_size, 2 * image_size, 3)).astype(np.float32)
    return MaskBank(image_size=image_size, alpha=alpha, shaded=shaded, noise=noise)
