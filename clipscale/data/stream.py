"""Streaming training data for LAION-scale shard sets: no per-sample index, bounded memory.

Why: the random-access index (shard_index.py) costs ~40 B per sample per rank and reads every tar
header, which suits up to ~1e8 samples. Stream mode (`data_mode = "stream"`) keeps only the shard
list, and reads tars sequentially with webdataset's tar iterators, as open_clip_train does.

Order. The used shards are permuted per pass with a generator seeded by (seed, pass). There are
`world_size * max(1, workers)` slots; slot s reads shards s, s + slots, ... of that pass's order
(so it needs at least as many shards as slots), through a shuffle buffer of `shuffle_buffer` samples
seeded by (seed, pass, rank, worker) and emptied at the end of each pass (hand-written, ~10 lines:
webdataset's buffer cannot be scoped to a pass with a given seed). Step k of rank r is slot
(r, k mod workers)'s next local batch, so batches are a pure function of (seed, world size, workers,
step). Every sample is read once per pass of its slot; with equal shard sizes and shards divisible
by slots the slots' passes line up exactly, otherwise a slot can run up to one shard ahead.

data_size = the first N samples (tar key groups) of the shards in spec order. Per-shard counts come
from img2dataset's `<shard>_stats.json` ("successes") when present, else from one scan of that
shard's tar headers; only the shards needed to reach N are scanned. The last shard may be used in
part (its first samples in tar order). Without data_size no counting is done at all.

Corrupt samples (undecodable image, missing/empty caption) are replaced by a copy of a valid sample
of the same local batch (seeded by (seed, step, rank)) and counted, so each batch consumes exactly
`local batch` raw samples. Resume therefore fast-forwards without decoding: whole passes are skipped
arithmetically when per-shard counts are known (data_size set or stats files), and the rest of the
current pass is read (tar bytes only) up to the position. Unreadable tars end that shard early (not
counted) and then break exact resume arithmetic for that pass.
"""

from __future__ import annotations

import itertools
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipscale.data.loader import Batch, DecodeError, decode_caption, decode_image, tokenize
from clipscale.data.shard_index import IMAGE_EXTS, TEXT_EXTS, expand_spec, index_tar
from clipscale.errors import ClipscaleError

Raw = dict[str, Any]  # one webdataset sample: {"__key__": ..., "png": bytes, "txt": bytes, ...}


@dataclass(frozen=True)
class ShardPlan:
    shards: list[Path]
    limits: list[int | None]  # use only the first n samples of shard i (None = all)
    counts: list[int] | None  # samples used per shard, when known

    @property
    def size(self) -> int | None:
        return None if self.counts is None else sum(self.counts)


def _stats_count(path: Path) -> int | None:
    stats = path.with_name(f"{path.name.removesuffix('.tar')}_stats.json")
    try:
        return int(json.loads(stats.read_text())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def count_samples(path: Path) -> int:
    """Key groups in one tar (one header scan, no data read)."""
    complete, incomplete, _ = index_tar(path)
    return len(complete) + incomplete


def plan_shards(spec: str, data_size: int | None) -> ShardPlan:
    shards = expand_spec(spec)
    if data_size is None:
        counts = [_stats_count(p) for p in shards]
        known = None if any(c is None for c in counts) else [int(c) for c in counts if c is not None]
        return ShardPlan(shards, [None] * len(shards), known)
    used: list[Path] = []
    limits: list[int | None] = []
    counts: list[int] = []
    for path in shards:
        n = _stats_count(path)
        n = count_samples(path) if n is None else n
        take = min(n, data_size - sum(counts))
        if take > 0:
            used.append(path)
            limits.append(None if take == n else take)
            counts.append(take)
        if sum(counts) >= data_size:
            return ShardPlan(used, limits, counts)
    raise ClipscaleError(f"train_data: data_size {data_size} exceeds the {sum(counts)} samples available "
                         f"in {len(shards)} shard(s)")


def _read_shard(path: Path, limit: int | None) -> Iterator[Raw]:
    """webdataset's tar iterator + key grouping; a broken tar ends the shard."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    try:
        with open(path, "rb") as f:
            files = tar_file_expander([{"url": str(path), "stream": f}])
            yield from itertools.islice(group_by_keys(files), limit)
    except (tarfile.TarError, OSError):
        return


def _shuffled(samples: Iterator[Raw], size: int, rng: np.random.Generator) -> Iterator[Raw]:
    buf: list[Raw] = []
    for sample in samples:
        if len(buf) < size:
            buf.append(sample)
            continue
        j = int(rng.integers(size))
        buf[j], sample = sample, buf[j]
        yield sample
    for j in rng.permutation(len(buf)):
        yield buf[j]


class StreamBatches(torch.utils.data.IterableDataset):
    """This rank's local batches from `start_step` on, in step order across DataLoader workers."""

    def __init__(self, plan: ShardPlan, *, image_size: int, tokenizer: Any, batch_size: int, seed: int,
                 rank: int, world_size: int, workers: int, shuffle_buffer: int) -> None:
        self.plan, self.image_size, self.tokenizer, self.seed = plan, image_size, tokenizer, seed
        self.rank, self.world_size, self.workers = rank, world_size, max(1, workers)
        self.local, self.shuffle_buffer, self.start_step = batch_size // world_size, shuffle_buffer, 0
        slots = world_size * self.workers
        if len(plan.shards) < slots:
            raise ClipscaleError(f"train_data: stream mode needs at least world_size x workers = {slots} "
                                 f"shards, got {len(plan.shards)}; use data_mode = 'index'")

    def _pass_shards(self, pass_: int, virtual: int) -> list[int]:
        order = np.random.default_rng([self.seed, pass_]).permutation(len(self.plan.shards))
        slot, slots = self.rank * self.workers + virtual, self.world_size * self.workers
        return [int(i) for i in order[slot::slots]]

    def _raw(self, virtual: int, skip: int) -> Iterator[Raw]:
        """The slot's infinite sample stream, starting `skip` samples in."""
        pass_ = 0
        if self.plan.counts is not None:
            while skip >= (n := sum(self.plan.counts[i] for i in self._pass_shards(pass_, virtual))) > 0:
                skip, pass_ = skip - n, pass_ + 1
        while True:
            shards = self._pass_shards(pass_, virtual)
            chain = itertools.chain.from_iterable(_read_shard(self.plan.shards[i], self.plan.limits[i])
                                                  for i in shards)
            rng = np.random.default_rng([self.seed, pass_, self.rank, virtual])
            read = 0
            for sample in _shuffled(chain, self.shuffle_buffer, rng):
                read += 1
                if read > skip:
                    yield sample
            if read == 0:
                raise ClipscaleError(f"train_data: stream slot {self.rank}/{virtual} read no samples in "
                                     f"pass {pass_} (empty shards?)")
            skip, pass_ = max(0, skip - read), pass_ + 1

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        virtual = (self.start_step + worker) % self.workers  # the slot this worker's steps belong to
        done_before = max(0, -(-(self.start_step - virtual) // self.workers))
        raw = self._raw(virtual, done_before * self.local)
        step = virtual + done_before * self.workers
        while True:
            yield self._decode([next(raw) for _ in range(self.local)], step)
            step += self.workers

    def _decode(self, samples: list[Raw], step: int) -> Batch:
        decoded: list[tuple[torch.Tensor, str] | None] = []
        for sample in samples:
            try:
                decoded.append(_decode_sample(sample, self.image_size))
            except DecodeError:
                decoded.append(None)
        good = [d for d in decoded if d is not None]
        if not good:
            raise ClipscaleError(f"train_data: a whole local batch at step {step} failed to decode; are the "
                                 "shards images + captions?")
        rng = np.random.default_rng([self.seed, 2_000_003, step, self.rank])
        filled = [d if d is not None else good[int(rng.integers(len(good)))] for d in decoded]
        texts = tokenize(self.tokenizer, [c for _, c in filled])
        return Batch(torch.stack([img for img, _ in filled]), texts, len(decoded) - len(good))


def _decode_sample(sample: Raw, image_size: int) -> tuple[torch.Tensor, str]:
    img = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    txt = next((sample[e] for e in TEXT_EXTS if e in sample), None)
    if img is None or txt is None:
        raise DecodeError("incomplete sample")
    return decode_image(img, image_size), decode_caption(txt)
