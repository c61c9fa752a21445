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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    torch.set_num_threads(1)
    from clipscale.data.synth import write_train_shards

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "shards")
        write_train_shards(out, samples=args.samples, seed=0, image_size=args.image_size, shard_size=1000)
        tars = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
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


if __name__ == "__main__":
    main()
