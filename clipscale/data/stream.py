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
part (its first samples in tar order). Without data_size and stats files no counting is done.

Bad shards are found before training by an O(1) look at each tar (its first header and its last
1 KiB, which a complete tar ends with as zero blocks; checked in a thread pool, on every rank alike):
empty and unreadable shards are left out, truncated ones are kept for their whole samples; all are
counted (`empty_shards`, `unreadable_shards`, `truncated_shards` in summary.json's `skipped`) and
named in a warning. A `_stats.json` is not trusted for a truncated tar or one modified after it
(`stats_mismatch_shards`): that shard's samples are recounted from its headers, so unique_samples is
what the tars hold. A shard whose samples, read to its end, differ from the planned count is
reported by the reader (a one-line warning on stderr).

Corrupt samples (undecodable image, missing/empty caption, a member cut short by a truncated tar:
tarfile member size vs bytes read) are replaced by a copy of a valid sample
of the same local batch (seeded by (seed, step, rank)) and counted, so each batch consumes exactly
`local batch` raw samples. Resume therefore fast-forwards without decoding: whole passes are skipped
arithmetically when per-shard counts are known (data_size set or stats files), and the rest of the
current pass is read (tar bytes only) up to the position. A tar that becomes unreadable mid-read ends
that shard early and then breaks exact resume arithmetic for that pass.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipscale.data.loader import Batch, DecodeError, augment_seed, decode_caption, decode_image, tokenize
from clipscale.data.shard_index import IMAGE_EXTS, TEXT_EXTS, _split_key, expand_spec, index_tar
from clipscale.errors import ClipscaleError

Raw = dict[str, Any]  # one webdataset sample: {"__key__": ..., "png": bytes, "txt": bytes, ...}


@dataclass(frozen=True)
class ShardPlan:
    shards: list[Path]
    limits: list[int | None]  # use only the first n samples of shard i (None = all)
    counts: list[int] | None  # samples used per shard, when known
    skipped: dict[str, int] = field(default_factory=dict)  # bad shards found while planning
    warnings: list[str] = field(default_factory=list)  # one line each, for the user

    @property
    def size(self) -> int | None:
        return None if self.counts is None else sum(self.counts)


BAD_SHARD_KINDS = ("empty_shards", "unreadable_shards", "truncated_shards", "stats_mismatch_shards")


def _stats_path(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.tar')}_stats.json")


def _stats_count(path: Path) -> int | None:
    try:
        return int(json.loads(_stats_path(path).read_text())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def shard_health(path: Path) -> str | None:
    """None for a tar that looks whole, else "empty", "unreadable" or "truncated". O(1): the first
    header block and the last 1 KiB (a complete tar ends with two zero blocks)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(512)
            f.seek(max(0, size - 1024))
            tail = f.read(1024)
    except OSError:
        return "unreadable"
    if size == 0 or head == bytes(len(head)):
        return "empty"
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return "unreadable"
    if size % 512 or len(tail) < 1024 or tail != bytes(1024):
        return "truncated"
    return None


def _stale_stats(path: Path) -> bool:
    """img2dataset writes `_stats.json` after its tar: a tar modified later no longer matches it."""
    try:
        return path.stat().st_mtime > _stats_path(path).stat().st_mtime + 1.0
    except OSError:
        return False


def count_samples(path: Path) -> int:
    """Key groups in one tar (one header scan, no data read)."""
    complete, incomplete, _ = index_tar(path)
    return len(complete) + incomplete


def _inspect(paths: list[Path]) -> list[tuple[str | None, int | None, bool]]:
    """(health, stats count, stats stale) per shard, in a thread pool (cheap reads, many files)."""
    def one(p: Path) -> tuple[str | None, int | None, bool]:
        stats = _stats_count(p)
        return shard_health(p), stats, stats is not None and _stale_stats(p)

    with ThreadPoolExecutor(max_workers=min(16, len(paths) or 1)) as pool:
        return list(pool.map(one, paths))


class _Planner:
    """Per-shard sample counts with bad shards counted and left out (or, if truncated, recounted)."""

    def __init__(self, shards: list[Path]) -> None:
        self.shards, self.info = shards, _inspect(shards)
        self.skipped = dict.fromkeys(BAD_SHARD_KINDS, 0)
        self.named: dict[str, list[str]] = {k: [] for k in BAD_SHARD_KINDS}

    def _note(self, kind: str, path: Path) -> None:
        self.skipped[kind] += 1
        self.named[kind].append(path.name)

    def usable(self, i: int) -> bool:
        health = self.info[i][0]
        if health in ("empty", "unreadable"):
            self._note(f"{health}_shards", self.shards[i])
            return False
        if health == "truncated":
            self._note("truncated_shards", self.shards[i])
        return True

    def count(self, i: int, *, scan: bool) -> int | None:
        """The shard's samples: its stats unless they cannot be trusted, else a header scan (if `scan`)."""
        path, (health, stats, stale) = self.shards[i], self.info[i]
        if stats is not None and health is None and not stale:
            return stats
        if stats is None and not scan:
            return None
        n = count_samples(path)
        if stats is not None and n != stats:
            self._note("stats_mismatch_shards", path)
            self.named["stats_mismatch_shards"][-1] += f" (stats {stats}, tar {n})"
        return n

    def warnings(self) -> list[str]:
        words = {"empty_shards": "empty", "unreadable_shards": "unreadable", "truncated_shards": "truncated",
                 "stats_mismatch_shards": "_stats.json not matching the tar (recounted)"}
        out = []
        for kind, names in self.named.items():
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                out.append(f"train_data: {len(names)} shard(s) {words[kind]}: {shown}")
        return out


def plan_shards(spec: str, data_size: int | None) -> ShardPlan:
    planner = _Planner(expand_spec(spec))
    good = [i for i in range(len(planner.shards)) if planner.usable(i)]
    if not good:
        raise ClipscaleError(f"train_data: none of the {len(planner.shards)} shard(s) of {spec!r} is a "
                             f"readable, non-empty tar")
    if data_size is None:
        counts = [planner.count(i, scan=False) for i in good]
        known = None if any(c is None for c in counts) else [int(c) for c in counts if c is not None]
        return ShardPlan([planner.shards[i] for i in good], [None] * len(good), known, planner.skipped,
                         planner.warnings())
    used: list[Path] = []
    limits: list[int | None] = []
    counts_used: list[int] = []
    for i in good:
        n = planner.count(i, scan=True)
        assert n is not None
        take = min(n, data_size - sum(counts_used))
        if take > 0:
            used.append(planner.shards[i])
            limits.append(None if take == n else take)
            counts_used.append(take)
        if sum(counts_used) >= data_size:
            return ShardPlan(used, limits, counts_used, planner.skipped, planner.warnings())
    raise ClipscaleError(f"train_data: data_size {data_size} exceeds the {sum(counts_used)} samples "
                         f"available in {len(planner.shards)} shard(s)")


_WARNED: set[Path] = set()  # shards already reported by this process
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta


def _members(path: Path) -> Iterator[tuple[str, str, bytes | None]]:
    """(key, ext, data) of each regular member in tar order; data None for a member cut short."""
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for info in tar:
            split = _split_key(info.name) if info.isreg() and not _META.match(info.name) else None
            if split is None:
                continue
            member = tar.extractfile(info)
            try:
                data = member.read() if member is not None else b""
            except (tarfile.ReadError, EOFError):
                data = None
            if data is not None and len(data) != info.size:
                data = None
            yield split[0], split[1], data
            if data is None:
                return  # nothing after a cut member is readable
            tar.members = []


def _grouped(path: Path) -> Iterator[Raw]:
    """webdataset's key grouping; a sample with a cut member is marked "__truncated__" (it decodes as
    corrupt: replaced and counted), so a cut caption is never trained as a complete one."""
    current: Raw | None = None
    try:
        for key, ext, data in _members(path):
            if current is not None and (current["__key__"] != key or ext in current):
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": str(path)}
            if data is None:
                current["__truncated__"] = True
            else:
                current[ext] = data
    except (tarfile.TarError, EOFError):  # a cut header: what was read of the group is all there is
        pass
    if current is not None:
        yield current


def _read_shard(path: Path, limit: int | None, expected: int | None = None) -> Iterator[Raw]:
    """The shard's samples (its first `limit`); a broken tar ends the shard. A whole read that does
    not give the `expected` count (the plan's) is reported on stderr."""
    n = 0
    try:
        for sample in itertools.islice(_grouped(path), limit):
            n += 1
            yield sample
    except (tarfile.TarError, OSError):
        return
    if expected is not None and n != expected and path not in _WARNED:
        _WARNED.add(path)
        sys.stderr.write(f"clipscale: warning: train_data: {path} gave {n} samples, planned {expected} "
                         f"(from its _stats.json or header scan)\n")


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
                 rank: int, world_size: int, workers: int, shuffle_buffer: int,
                 augment: bool = False) -> None:
        self.plan, self.image_size, self.tokenizer, self.seed = plan, image_size, tokenizer, seed
        self.augment = augment  # open_clip's training crop, seeded by (seed, step, global slot)
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
            counts = self.plan.counts
            chain = itertools.chain.from_iterable(
                _read_shard(self.plan.shards[i], self.plan.limits[i], None if counts is None else counts[i])
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
        for j, sample in enumerate(samples):
            crop = augment_seed(self.seed, step, self.rank * self.local + j) if self.augment else None
            try:
                decoded.append(_decode_sample(sample, self.image_size, crop))
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


def _decode_sample(sample: Raw, image_size: int, crop_seed: int | None = None) -> tuple[torch.Tensor, str]:
    if sample.get("__truncated__"):
        raise DecodeError("member cut short by a truncated tar")
    img = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    txt = next((sample[e] for e in TEXT_EXTS if e in sample), None)
    if img is None or txt is None:
        raise DecodeError("incomplete sample")
    return decode_image(img, image_size, crop_seed), decode_caption(txt)
