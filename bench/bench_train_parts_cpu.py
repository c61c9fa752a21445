"""Micro-benchmarks behind the choices in clipscale's CPU training path (1 thread each):

- AdamW over a tiny-S1-bpe-sized parameter set (49,408 x 64 token embedding + 40 small matrices):
  per-parameter loop (torch's CPU default, what open_clip_train gets) vs foreach vs fused.
- Decoding a 32 px PNG: PIL (open + convert + asarray) vs torchvision.io.decode_image.

    .venv/bin/python bench/bench_train_parts_cpu.py
"""

from __future__ import annotations

import io
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def bench_adamw() -> None:
    params = [torch.nn.Parameter(torch.randn(49408, 64)), *[torch.nn.Parameter(torch.randn(64, 256))
                                                             for _ in range(40)]]
    for p in params:
        p.grad = torch.randn_like(p)
    for kw in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, **kw)
        opt.step()
        t = time.perf_counter()
        for _ in range(20):
            opt.step()
        print(f"AdamW {kw}: {(time.perf_counter() - t) / 20 * 1e3:.1f} ms/step")


def bench_decode() -> None:
    import torchvision.io as tio

    from clipscale.data.synth import iter_shard_samples, write_train_shards

    with tempfile.TemporaryDirectory() as tmp:
        write_train_shards(os.path.join(tmp, "s"), samples=500, seed=0)
        pngs = [s["png"] for s in iter_shard_samples(os.path.join(tmp, "s", "00000.tar"))]

    def pil(b: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(b)) as im:
            return np.asarray(im.convert("RGB"))

    def tv(b: bytes) -> torch.Tensor:
        return tio.decode_image(torch.frombuffer(bytearray(b), dtype=torch.uint8), mode=tio.ImageReadMode.RGB)

    for fn in (pil, tv, pil, tv):
        t = time.perf_counter()
        for b in pngs:
            fn(b)
        print(f"decode 32px PNG with {fn.__name__}: {(time.perf_counter() - t) / len(pngs) * 1e6:.0f} us")


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("load average", os.getloadavg())
    bench_adamw()
    bench_decode()
