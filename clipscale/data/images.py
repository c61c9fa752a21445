"""Image bytes -> pixels, shared by training (`data/loader.py`, `data/stream.py`) and evaluation
(`evals/embed.py`), so both stages apply one pixel limit and one "any mode to RGB" rule.

* `open_image` parses only the header (PIL opens lazily) and refuses an image of more than
  `MAX_PIXELS` pixels before anything is decoded: a 1 MB PNG that claims 30000 x 30000 pixels would
  otherwise cost ~2.7 GB of RAM. The limit is PIL's own decompression-bomb threshold (2 x PIL's
  default `Image.MAX_IMAGE_PIXELS`), which evaluation has always applied.
* `decode_rgb` gives uint8 RGB of PNG/JPEG/WebP in any mode (palette, grey, grey + alpha, RGBA,
  16-bit, CMYK): torchvision's libpng/libjpeg decoder, 2-3x faster than PIL on small PNGs, with 16-bit
  images scaled to 8 bits (they decode to uint16); PIL for the formats torchvision does not read.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

MAX_PIXELS = 2 * 89_478_485  # PIL's DecompressionBombError threshold (2 x its default MAX_IMAGE_PIXELS)


class ImageError(Exception):
    """The bytes are not a readable image, or one larger than MAX_PIXELS."""


def open_image(data: bytes) -> Image.Image:
    """The PIL image of `data` with only its header read; ImageError if unreadable or too large."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL's own check, at the same threshold by default
        raise ImageError(f"image over the {MAX_PIXELS:,}-pixel limit ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"undecodable image ({type(exc).__name__})") from exc
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise ImageError(f"{width}x{height} image over the {MAX_PIXELS:,}-pixel limit")
    return img


def decode_rgb(data: bytes) -> torch.Tensor:
    """uint8 RGB (3, H, W) of an image in any mode; ImageError if unreadable or over the pixel limit."""
    import torchvision.io as tio
    import torchvision.transforms.v2.functional as tvf

    with open_image(data) as img:  # the pixel limit, checked before decoding
        try:
            out = tio.decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                   mode=tio.ImageReadMode.RGB)
        except Exception:  # a format torchvision does not decode (or corrupt): PIL decides
            out = _pil_rgb(img)
    if out.dtype != torch.uint8:  # 16-bit PNGs: 0..65535 -> 0..255
        out = tvf.to_dtype(out, torch.uint8, scale=True)
    return out


def _pil_rgb(img: Image.Image) -> torch.Tensor:
    try:
        arr = np.array(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageError(f"undecodable image ({type(exc).__name__})") from exc
    return torch.from_numpy(arr).permute(2, 0, 1)
