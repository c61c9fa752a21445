"""Read a shard back as {key: {ext: bytes}} dicts, in file order: for tests and inspection only.

Training reads shards with webdataset (train/); this exists so checks need neither torch nor a loader.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator


def iter_shard_samples(path: str | os.PathLike) -> Iterator[dict[str, bytes | str]]:
    """Yield one dict per sample: "__key__" plus one entry per extension (raw bytes)."""
    current: dict[str, bytes | str] = {}
    with tarfile.open(path, mode="r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            extracted = tar.extractfile(member)
            assert extracted is not None
            current[ext] = extracted.read()
    if current:
        yield current
