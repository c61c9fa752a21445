"""Artwork -> an (S, S, 3) uint8 image: decode the PNG or render the SVG, composite, resize.

Every style goes through the same steps, so styles differ in their art, not in resampling:
1. an RGBA image at SOURCE_SIZE (64 px, the size of the emoji-datasource PNGs): PNGs are decoded
   with Pillow, OpenMoji's SVGs are rendered at 64 px by resvg (PyPI `resvg-py`: a wheel with resvg
   compiled in, needing no system library such as cairo; only glibc);
2. alpha-composited onto an opaque white background (BACKGROUND), before resizing, so transparent
   pixels' colours never bleed into the edges;
3. resized to the target size with Pillow's Lanczos filter (antialiased when shrinking).

An image that cannot be decoded or rendered raises `UnreadableImage`; the builder skips and counts it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from clipscale.errors import ClipscaleError

SOURCE_SIZE = 64
BACKGROUND = (255, 255, 255)
RENDERER = "resvg-py"


class UnreadableImage(Exception):
    """One artwork file could not be turned into an image (corrupt PNG, invalid SVG)."""


def svg_renderer_version() -> str:
    """'resvg-py X (resvg Y)'; a one-line error naming the package to install when it is missing."""
    try:
        import resvg_py
    except ImportError:
        raise ClipscaleError("the openmoji style renders SVGs with resvg-py, which is not installed "
                             "(pip install resvg-py==0.5.0), or leave openmoji out of --styles") from None
    return f"{RENDERER} {resvg_py.__version__} (resvg {resvg_py.__resvg_version__})"


def _decode_png(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from None


def _render_svg(path: Path) -> Image.Image:
    import resvg_py

    try:
        svg = path.read_text(encoding="utf-8")
        png = resvg_py.svg_to_bytes(svg_string=svg, width=SOURCE_SIZE, height=SOURCE_SIZE,
                                    skip_system_fonts=True)
        with Image.open(io.BytesIO(bytes(png))) as img:
            img.load()
            return img.convert("RGBA")
    except (OSError, ValueError) as exc:  # resvg raises ValueError for SVG it cannot parse
        raise UnreadableImage(f"{path}: {exc}") from None


def load_rgba(path: Path, kind: str) -> Image.Image:
    return _render_svg(path) if kind == "svg" else _decode_png(path)


def to_rgb(img: Image.Image, size: int) -> np.ndarray:
    """Composite an RGBA image on BACKGROUND at SOURCE_SIZE, then resize to (size, size) RGB uint8."""
    if img.size != (SOURCE_SIZE, SOURCE_SIZE):
        img = img.resize((SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", img.size, (*BACKGROUND, 255))
    canvas.alpha_composite(img)
    rgb = canvas.convert("RGB")
    if size != SOURCE_SIZE:
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def render(path: Path, kind: str, size: int) -> np.ndarray:
    """The artwork at `path` as an (size, size, 3) uint8 array; `UnreadableImage` when it cannot be read."""
    return to_rgb(load_rgba(path, kind), size)
