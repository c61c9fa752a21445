"""Benchmark: synthetic data generation throughput on one core (target >= 1,000 samples/s at 64 px).

Times `write_train_shards` end to end (render + caption + PNG + tar + meta) into a temp directory,
plus a per-stage breakdown, for 32 and 64 px. The generator is single-threaded; pin it to one core
with `taskset -c 0` for a clean one-core number. Record `uptime` next to the result: the machine is
shared.

    .venv/bin/python bench/bench_synth.py [--samples 20000] [--distribution uniform]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from clipscale.data.synth import get_distribution, write_train_shards
from clipscale.data.synth.captions import caption
from clipscale.data.synth.output import png_bytes
from clipscale.data.synth.scene import render, sample_objects, sample_rng


def _per_sample_us(fn, n: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / n * 1e6


def breakdown(image_size: int, distribution: str, n: int = 3000) -> dict[str, float]:
    dist = get_distribution(distribution)
    rngs = [sample_rng(0, i) for i in range(n)]
    objects = [sample_objects(r, dist, image_size) for r in rngs]
    images = [render(r, o, image_size) for r, o in zip(rngs, objects)]
    return {
        "seed_rng": _per_sample_us(lambda: [sample_rng(0, i) for i in range(n)], n),
        "sample_scene": _per_sample_us(lambda: [sample_objects(r, dist, image_size) for r in rngs], n),
        "render": _per_sample_us(lambda: [render(r, o, image_size) for r, o in zip(rngs, objects)], n),
        "caption": _per_sample_us(lambda: [caption(r, o, dist.style) for r, o in zip(rngs, objects)], n),
        "png": _per_sample_us(lambda: [png_bytes(im) for im in images], n),
    }


def end_to_end(image_size: int, distribution: str, samples: int) -> tuple[float, float, int]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        write_train_shards(tmp / "out", samples=samples, image_size=image_size, distribution=distribution)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = sum(p.stat().st_size for p in (tmp / "out").iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return samples / wall, samples / cpu, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--distribution", default="uniform")
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    for size in (32, 64):
        parts = breakdown(size, args.distribution)
        wall_rate, cpu_rate, nbytes = end_to_end(size, args.distribution, args.samples)
        detail = ", ".join(f"{k} {v:.0f} us" for k, v in parts.items())
        print(f"{size} px: {wall_rate:,.0f} samples/s wall, {cpu_rate:,.0f} samples/s per CPU-second "
              f"({args.samples:,} samples, {nbytes / args.samples / 1e3:.1f} kB/sample on disk); {detail}")


if __name__ == "__main__":
    main()
