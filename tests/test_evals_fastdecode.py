"""The eval fast decode path must give exactly the tensors open_clip's eval transform gives."""

import io

import numpy as np
import torch
from PIL import Image

from clipscale.evals.datasets import ImageRef
from clipscale.evals.embed import PixelCache, _assemble, _decode, fast_decode_for, preprocess_for
from clipscale.models import create_model, model_config


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(buf, format="PNG")
    return buf.getvalue()


def _refs(tmp_path, blobs: list[bytes]) -> list[ImageRef]:
    refs = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"{i}.img"
        path.write_bytes(blob)
        refs.append(ImageRef(str(path)))
    return refs


def test_fast_path_is_bit_identical_to_open_clip_transform(tmp_path):
    model = create_model("tiny-S0")
    cfg = model_config("tiny-S0")
    transform, _ = preprocess_for(model, cfg)
    fast = fast_decode_for(model, cfg)
    assert fast is not None and fast.size == 32
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    blobs = [
        _png(rgb[0]), _png(rgb[1]),               # 8-bit RGB at model size: fast path
        _png(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)),  # other size: PIL resize + crop
        _png(rgb[2], mode="P"),                     # palette PNG: PIL path
        b"\x89PNG\r\n\x1a\n" + b"\0" * 40,          # corrupt: skipped
    ]
    refs = _refs(tmp_path, blobs)
    decoded = [_decode(ref, transform, fast) for ref in refs]
    assert [d[0] if d else None for d in decoded] == ["fast", "fast", "pil", "pil", None]
    pixels = PixelCache(workers=2).get(_FakeDataset(refs), transform, "k", fast)
    assert pixels.valid.tolist() == [True, True, True, True, False]
    for row, blob in zip(pixels.images, blobs[:4]):
        with Image.open(io.BytesIO(blob)) as img:
            expected = transform(img)
        assert torch.equal(row, expected)  # exact, not approximately


def test_assemble_keeps_dataset_order_when_paths_mix():
    model = create_model("tiny-S0")
    fast = fast_decode_for(model, model_config("tiny-S0"))
    raw = torch.zeros(3, 32, 32, dtype=torch.uint8)
    pil = torch.full((3, 32, 32), 7.0)
    out = _assemble([("pil", pil), ("fast", raw), ("pil", pil)], fast)
    assert torch.equal(out[0], pil) and torch.equal(out[2], pil)
    assert torch.equal(out[1], fast.normalize(raw[None])[0])


class _FakeDataset:
    def __init__(self, refs):
        self.images = refs
        self.fingerprint = "fake"
