"""Small file helpers every stage shares: atomic writes, strict JSON, append-only JSON lines.

Results are only ever written through these, so an interrupted process never leaves a half-written
file: writes go to a temporary name in the same directory, are renamed into place, and the directory
is fsynced so the rename survives a crash. A JSON-lines append that was cut short (disk full, kill)
leaves at most one torn line: the next append starts on a fresh line and readers skip the torn one
with a warning. A write that fails (read-only directory, full disk) is one ClipscaleError naming it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError

log = logging.getLogger(__name__)
TMP_SUFFIX = ".tmp"  # every temporary file of an atomic write is named .<name>.<random>.tmp


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


def write_error(exc: OSError, path: str | os.PathLike) -> ClipscaleError:
    """One line for a failed write of `path`: a full disk names its directory, else the reason."""
    path = Path(path)
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ClipscaleError(f"no space left on {path.parent} (writing {path.name})")
    return ClipscaleError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError while writing `path` (or its temporary file) into `write_error`'s one line."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path) from None


class KeepWriteError:
    """A binary file wrapper that remembers the OSError of a failed write.

    torch.save reports a write that fails part-way as RuntimeError("[enforce fail at
    inline_container.cc] unexpected pos"), losing the ENOSPC behind it; `reraise` brings it back.
    """

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in `directory` durable (a crash must not bring the old file back)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_stale_tmp(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed writer left in `directory`; call only where no writer can be
    active (e.g. under the run's lock). Returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for p in Path(directory).iterdir():
            if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename: readers see old or new, never half."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
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
        fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one strict-JSON line in one write(), fsynced; after a torn line it starts a fresh one."""
    path = Path(path)
    data = (dumps(record) + "\n").encode("utf-8")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # the last append was cut short: never glue onto its torn line
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def read_toml(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax is a one-line error naming the file."""
    import tomllib

    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipscaleError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ClipscaleError(f"{path}: a directory; expected a {what} (TOML)") from None
    except UnicodeDecodeError:
        raise ClipscaleError(f"{path}: not UTF-8 text; expected a {what} (TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClipscaleError(f"{path}: invalid TOML ({exc})") from None


def _parse_line(line: str) -> tuple[dict[str, Any] | None, bool]:
    """(record, torn): a whole record; or a record appended onto a torn line (older versions glued
    them), recovered from its first `{"` that parses; or (None, True)."""
    try:
        record = json.loads(line)
        if isinstance(record, dict):
            return record, False
    except json.JSONDecodeError:
        pass
    start = line.find('{"', 1)
    while start != -1:
        try:
            record = json.loads(line[start:])
            if isinstance(record, dict):
                return record, True
        except json.JSONDecodeError:
            pass
        start = line.find('{"', start + 1)
    return None, True


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON-lines file; lines torn by an interrupted append are skipped and
    counted in one warning, and a valid record glued onto a torn line is still read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    records, torn = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        record, was_torn = _parse_line(line)
        if was_torn:
            torn.append(number)
        if record is not None:
            records.append(record)
    if torn:
        shown = ", ".join(map(str, torn[:5])) + (", ..." if len(torn) > 5 else "")
        log.warning("%s: skipped %d torn line(s) (line %s) left by an interrupted write; %d records read",
                    path, len(torn), shown, len(records))
    yield from records
