"""How many training samples a shard spec holds, cheaply, so a study can check `data_size` at load time.

Per shard: img2dataset's `<shard>_stats.json` ("successes") when present and not older than its tar
(O(1)), else one scan of the tar's headers (`shard_index.index_tar`: complete image + caption groups;
no member data is read, no image decoded). Counts are cached per shard set in the process, keyed by
each shard's path, size and mtime (and its stats file's), so `plan` and every command after
`load_study` reuse them. The count is what index mode can use (complete samples); `data_size` above
it is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipscale.data.shard_index import expand_spec, index_tar

_CACHE: dict[tuple[tuple[str, int, int, int], ...], int] = {}


def _stats_file(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.tar')}_stats.json")


def _version(path: Path) -> tuple[str, int, int, int]:
    """What a shard's count depends on: the tar's path, size, mtime, and its stats file's mtime."""
    st = path.stat()
    try:
        stats = _stats_file(path).stat().st_mtime_ns
    except OSError:
        stats = 0
    return str(path), st.st_size, st.st_mtime_ns, stats


def _stats(path: Path) -> int | None:
    stats = _stats_file(path)
    try:
        if path.stat().st_mtime > stats.stat().st_mtime + 1.0:  # the tar changed after its stats
            return None
        return int(json.loads(stats.read_text(encoding="utf-8"))["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _count(path: Path) -> int:
    stats = _stats(path)
    if stats is not None:
        return stats
    complete, _, _ = index_tar(path)
    return len(complete)


def count_shard_samples(spec: str) -> int:
    """Complete samples in the shards of `spec` (ClipscaleError if they do not exist)."""
    paths = expand_spec(spec)
    key = tuple(_version(p) for p in paths)
    if key not in _CACHE:
        _CACHE[key] = sum(_count(p) for p in paths)
    return _CACHE[key]
