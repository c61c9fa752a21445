"""Small file helpers every stage shares: atomic writes, strict JSON, append-only JSON lines.

Results are only ever written through these, so an interrupted process never leaves a half-written
file: writes go to a temporary name in the same directory and are renamed into place.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError


def _sanitize(value: Any) -> Any:
    """Replace non-finite floats by None (strict JSON has no NaN) and numpy scalars by Python ones."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return _sanitize(item())
    return value


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON: NaN and inf become null, never the invalid tokens NaN/Infinity."""
    return json.dumps(_sanitize(obj), indent=indent, allow_nan=False, sort_keys=False)


@functools.cache
def _default_file_mode() -> int:
    """0o666 minus the umask: what open() would give; mkstemp alone makes files owner-only."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one strict-JSON line; a single write() of a whole line, flushed and fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_toml(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax is a one-line error naming the file."""
    import tomllib

    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipscaleError(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClipscaleError(f"{path}: invalid TOML ({exc})") from None


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON-lines file, skipping a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 or all(not rest.strip() for rest in lines[i + 1 :]):
                return  # torn final line from an interrupted append
            raise
