"""Training-data throughput: clipscale's index mode and stream mode against webdataset's pipeline as
open_clip_train builds it (shuffle buffer, PIL decode, torchvision transform, tokenizer, batching).

Loader only (no model): samples/s delivered as training batches, over the same synthetic shards, with
the same BPE tokenizer and batch size. clipscale batches carry uint8 images (normalised later on the
device inside the train step); the peer's carry normalised float images, as open_clip_train's do.

    .venv/bin/python bench/bench_data.py [--samples 20000] [--image-size 64] [--batch 256] [--workers 0 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator

import torch


def timed(batches: Iterator, n_batches: int, batch: int) -> float:
    next(batches)  # first batch: worker start-up, shard listing, tokenizer load
    t = time.perf_counter()
    for _ in range(n_batches):
        next(batches)
    return n_batches * batch / (time.perf_counter() - t)


def clipscale_index(shards: str, size: int, batch: int, workers: int) -> Iterator:
    from clipscale.data.loader import SampleReader, StepBatches, StepSampler, build_sources, make_loader
    from clipscale.models import get_tokenizer

    sources = build_sources(shards, None)
    sampler = StepSampler([len(ix) for ix, _ in sources], [w for _, w in sources], batch, seed=0)
    reader = SampleReader([ix for ix, _ in sources], size)
    ds = StepBatches(sampler, reader, get_tokenizer("ViT-B-32"), rank=0, world_size=1)
    return iter(make_loader(ds, 0, 10**6, workers=workers, pin_memory=False))


def clipscale_stream(shards: str, size: int, batch: int, workers: int) -> Iterator:
    from clipscale.data.loader import make_loader
    from clipscale.data.stream import StreamBatches, plan_shards
    from clipscale.models import get_tokenizer

    ds = StreamBatches(plan_shards(shards, None), image_size=size, tokenizer=get_tokenizer("ViT-B-32"),
                       batch_size=batch, seed=0, rank=0, world_size=1, workers=workers, shuffle_buffer=1000)
    return iter(make_loader(ds, 0, 10**6, workers=workers, pin_memory=False))


def webdataset_openclip(shards: list[str], size: int, batch: int, workers: int) -> Iterator:
    import open_clip
    import webdataset as wds

    preprocess = open_clip.image_transform(size, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    pipeline = wds.DataPipeline(
        wds.ResampledShards(shards),
        wds.tarfile_to_samples(),
        wds.shuffle(1000),
        wds.decode("pilrgb"),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=preprocess, text=lambda t: tokenizer(t)[0]),
        wds.to_tuple("image", "text"),
        wds.batched(batch, partial=False),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return iter(loader)


def laion_like_decode_ms(n: int = 200) -> float:
    """ms to decode one 400x300 JPEG (quality 90, smooth gradient + noise) and apply open_clip's 224 px
    training transform: the per-sample work of a LAION-scale loader, for scale against tar reading."""
    import io

    import numpy as np
    import open_clip
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 400)[None, :, None] * np.linspace(0, 1, 300)[:, None, None] * 255
    img = (ramp + rng.normal(0, 20, (300, 400, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    transform = open_clip.image_transform(224, is_train=True)
    t = time.perf_counter()
    for _ in range(n):
        with Image.open(io.BytesIO(data)) as im:
            transform(im.convert("RGB"))
    return (time.perf_counter() - t) / n * 1e3


def profile_stream(shards: str, size: int, batch: int) -> None:
    """Where stream mode's time goes (workers 0): tar reading (webdataset/tarfile) vs decoding."""
    import cProfile
    import pstats

    batches = clipscale_stream(shards, size, batch, 0)
    next(batches)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [next(batches) for _ in range(15)])
    pstats.Stats(profiler).sort_stats("cumulative").print_stats("stream.py|tariterators", 8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--profile-stream", action="store_true", help="cProfile 15 stream-mode batches instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from clipscale.data.synth import write_train_shards

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "shards")
        write_train_shards(out, samples=args.samples, seed=0, image_size=args.image_size, shard_size=1000)
        tars = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
        if args.profile_stream:
            profile_stream(out, args.image_size, args.batch)
            return
        print(f"{len(tars)} shards, {args.samples} samples at {args.image_size} px, batch {args.batch}; "
              f"load average {os.getloadavg()[0]:.2f}")
        for workers in args.workers:
            for name, make, source in (
                ("clipscale index", clipscale_index, out),
                ("clipscale stream", clipscale_stream, out),
                ("webdataset (open_clip_train)", webdataset_openclip, tars),
            ):
                rate = timed(make(source, args.image_size, args.batch, workers), args.batches, args.batch)
                print(f"  workers {workers}  {name:<30} {rate:8.0f} samples/s", flush=True)
    ms = laion_like_decode_ms()
    print(f"for scale: 400x300 JPEG decode + open_clip 224 px train transform {ms:.2f} ms/sample")


if __name__ == "__main__":
    main()
