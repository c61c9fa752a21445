"""Training shards in the LAION/img2dataset webdataset layout.

DIR/00000.tar, 00001.tar, ... each holding <= shard_size samples `{key}.png`, `{key}.txt` (caption),
`{key}.json` (scene attributes, caption, key), plus DIR/meta.json. Sample i is a pure function of
(seed, i): shards can be generated independently, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clipscale.data.synth.captions import caption
from clipscale.data.synth.distributions import Distribution, get_distribution
from clipscale.data.synth.output import ShardTarWriter, atomic_output_dir, png_bytes
from clipscale.data.synth.scene import TRAIN_STREAM, objects_to_json, render, sample_objects, sample_rng
from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_json

GENERATOR_VERSION = "clipscale-synth-1"
IMAGE_SIZES = (32, 64)
MAX_SHARD_SIZE = 10_000


def check_common(*, seed: int, image_size: int, distribution: str) -> Distribution:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ClipscaleError(f"seed: expected an integer >= 0, got {seed!r}")
    if image_size not in IMAGE_SIZES:
        valid = ", ".join(map(str, IMAGE_SIZES))
        raise ClipscaleError(f"image_size: expected one of {valid}, got {image_size!r}")
    return get_distribution(distribution)


def check_positive_int(name: str, value: Any, maximum: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    if not ok or (maximum is not None and value > maximum):
        bound = f" and <= {maximum:,}" if maximum is not None else ""
        raise ClipscaleError(f"{name}: expected an integer > 0{bound}, got {value!r}")


def train_sample(seed: int, index: int, image_size: int, dist: Distribution) -> tuple[str, dict[str, bytes]]:
    """Key and webdataset files of training sample `index`."""
    rng = sample_rng(seed, index, TRAIN_STREAM)
    objects = sample_objects(rng, dist, image_size)
    image = render(rng, objects, image_size)
    text = caption(rng, objects, dist.style)
    key = f"{index:09d}"
    record = {"key": key, "caption": text, "index": index, "seed": seed, "distribution": dist.name,
              "n_objects": len(objects), "objects": objects_to_json(objects)}
    return key, {"png": png_bytes(image), "txt": text.encode(), "json": json.dumps(record).encode()}


def write_shard(path: Path, *, seed: int, start: int, stop: int, image_size: int, dist: Distribution) -> None:
    """Write samples [start, stop) to one tar: the unit of parallel or resumed generation."""
    with ShardTarWriter(path) as tar:
        for index in range(start, stop):
            key, files = train_sample(seed, index, image_size, dist)
            tar.write(key, files)


def write_train_shards(
    out_dir: str | os.PathLike,
    *,
    samples: int,
    seed: int = 0,
    image_size: int = 32,
    distribution: str = "uniform",
    shard_size: int = MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate `samples` captioned scenes into webdataset shards under `out_dir`; return meta.json.

    The directory appears complete or not at all (written to a temporary sibling, then renamed).
    """
    check_positive_int("samples", samples)
    check_positive_int("shard_size", shard_size, MAX_SHARD_SIZE)
    dist = check_common(seed=seed, image_size=image_size, distribution=distribution)
    names = [f"{i:05d}.tar" for i in range((samples + shard_size - 1) // shard_size)]
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        try:
            for i, name in enumerate(names):
                start = i * shard_size
                write_shard(tmp / name, seed=seed, start=start, stop=min(start + shard_size, samples),
                            image_size=image_size, dist=dist)
        except OSError as exc:
            raise ClipscaleError(f"{out_dir}: writing shards failed ({exc.strerror or exc})") from None
        meta = {
            "format": "webdataset", "layout": "img2dataset", "generator_version": GENERATOR_VERSION,
            "samples": samples, "seed": seed, "distribution": distribution, "image_size": image_size,
            "shard_size": shard_size, "num_shards": len(names), "shards": names,
            "extensions": ["png", "txt", "json"], "captions": "lowercase words of clipscale.data.synth.vocab",
        }
        atomic_write_json(tmp / "meta.json", meta)
    return meta
