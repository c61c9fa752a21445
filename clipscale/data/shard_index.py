"""Shard specs and a random-access index of webdataset tar shards.

Why an index instead of webdataset's sequential stream: the paper's knobs need "the first N unique
samples in a fixed order" and "the samples of step k are a pure function of (seed, k)" so that runs
are reproducible and resume mid-pass. Reading tar headers once gives every sample's (shard, byte
offset, size); batches then read members with one pread each, in any order, from any worker.
Limit: the index costs ~40 bytes per sample (numpy) on every rank, indexing reads every tar header
once per run, and a pass permutation costs 8 bytes per sample per worker, so this suits up to ~10^8
unique samples (e.g. LAION-80M subsets). Beyond that use `data_mode = "stream"` (data/stream.py:
shard-level permutation per pass + bounded shuffle buffer, no per-sample index).

Sample grouping follows webdataset's convention (key = path up to the first dot of the basename);
spec expansion uses `braceexpand`, webdataset's own dependency.
"""

from __future__ import annotations

import glob
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipscale.errors import ClipscaleError

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
TEXT_EXTS = ("txt",)


def expand_spec(spec: str) -> list[Path]:
    """'dir/{00000..00009}.tar' (brace expansion), globs, '::'-joined specs, or a directory of *.tar."""
    from braceexpand import braceexpand

    paths: list[Path] = []
    for part in spec.split("::"):
        part = part.strip()
        if Path(part).is_dir():
            paths.extend(sorted(Path(part).glob("*.tar")))
            continue
        for pattern in braceexpand(part):
            if any(c in pattern for c in "*?["):
                paths.extend(Path(p) for p in sorted(glob.glob(pattern)))
            elif Path(pattern).is_file():
                paths.append(Path(pattern))
            else:
                raise ClipscaleError(f"train_data: shard {pattern} (from spec {spec!r}) does not exist")
    if not paths:
        raise ClipscaleError(f"train_data: shard spec {spec!r} matches no files")
    return paths


@dataclass
class ShardIndex:
    """The first `size` complete samples (image + caption) of a list of shards, in shard order."""

    shards: list[Path]
    shard_id: np.ndarray  # int32 [n]
    image_offset: np.ndarray  # int64 [n]
    image_size: np.ndarray  # int32 [n]
    text_offset: np.ndarray  # int64 [n]
    text_size: np.ndarray  # int32 [n]
    skipped: dict[str, int] = field(default_factory=dict)  # incomplete samples, empty/bad shards

    def __len__(self) -> int:
        return len(self.shard_id)


def _split_key(name: str) -> tuple[str, str] | None:
    """webdataset's rule: key = path up to the first dot in the basename, ext = the rest."""
    directory, _, base = name.rpartition("/")
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def index_tar(path: Path) -> tuple[list[tuple[int, int, int, int]], int, bool]:
    """Complete samples of one tar as (img_off, img_size, txt_off, txt_size); incomplete count; ok."""
    samples: list[tuple[int, int, int, int]] = []
    incomplete = 0
    current: str | None = None
    parts: dict[str, tuple[int, int]] = {}

    def flush() -> None:
        nonlocal incomplete
        if current is None:
            return
        img = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
        txt = next((parts[e] for e in TEXT_EXTS if e in parts), None)
        if img is None or txt is None:
            incomplete += 1
        else:
            samples.append((img[0], img[1], txt[0], txt[1]))

    try:
        end = path.stat().st_size
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                split = _split_key(info.name)
                if split is None:
                    continue
                key, ext = split
                if key != current:
                    flush()
                    current, parts = key, {}
                if info.offset_data + info.size > end:  # cut by a truncated tar: never a whole caption
                    raise tarfile.ReadError("member data past the end of the file")
                parts[ext] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError):
        flush()
        return samples, incomplete, False
    flush()
    return samples, incomplete, True


def build_index(shards: list[Path], limit: int | None) -> ShardIndex:
    """Index shards in order until `limit` complete samples (all if None); counts what was skipped."""
    chunks: list[np.ndarray] = []
    count = 0
    skipped = {"incomplete_samples": 0, "empty_shards": 0, "unreadable_shards": 0}
    for sid, path in enumerate(shards):
        if limit is not None and count >= limit:
            break
        samples, incomplete, ok = index_tar(path)
        skipped["incomplete_samples"] += incomplete
        skipped["unreadable_shards"] += 0 if ok else 1
        if ok and not samples and not incomplete:
            skipped["empty_shards"] += 1
        if samples:
            chunk = np.empty((len(samples), 5), dtype=np.int64)
            chunk[:, 0] = sid
            chunk[:, 1:] = samples
            chunks.append(chunk)
            count += len(samples)
    if limit is not None and count < limit:
        raise ClipscaleError(f"train_data: data_size {limit} exceeds the {count} complete samples "
                             f"available in {len(shards)} shard(s)")
    if count == 0:
        raise ClipscaleError(f"train_data: no complete (image + caption) samples in {len(shards)} shard(s)")
    arr = np.concatenate(chunks)[:limit]
    return ShardIndex(
        shards=list(shards),
        shard_id=arr[:, 0].astype(np.int32),
        image_offset=arr[:, 1],
        image_size=arr[:, 2].astype(np.int32),
        text_offset=arr[:, 3],
        text_size=arr[:, 4].astype(np.int32),
        skipped=skipped,
    )
