"""Per-run state files and locks: the run directory says what happened, never the executor's memory.

State (`RUN_DIR/state.json`, written atomically): absent = pending, then running → finished | failed
(with its error) | interrupted (a signal stopped it; it checkpointed). A run left "running" by a killed
executor is interrupted too: nobody holds its lock. Either way the next `clipscale run` resumes it from
its latest checkpoint; only a run whose training reached its samples seen is ever "finished".

Lock (`RUN_DIR/.lock`): an exclusive `fcntl.flock` held for the whole run. The kernel (or the NFS
client's lease, on a cluster file system) drops it when the holder dies, even by SIGKILL, so a lock can
never go stale and block a rerun; the file's content (pid, host, time) only says who holds it. Two
executors on the same study therefore never train the same run: the second skips it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipscale.io import atomic_write_json

STATES = ("pending", "running", "finished", "failed", "interrupted")
STATE_FILE = "state.json"
LOCK_FILE = ".lock"


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run's state record; {"state": "pending"} when it never started."""
    path = Path(run_dir) / STATE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"state": "pending", "attempts": 0}
    except json.JSONDecodeError:  # cannot happen with atomic writes; treat as never started
        return {"state": "pending", "attempts": 0}
    return record


def write_state(run_dir: Path, state: str, *, error: str | None = None, **extra: Any) -> dict[str, Any]:
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    previous = read_state(run_dir)
    attempts = previous.get("attempts", 0) + (1 if state == "running" else 0)
    record = {"state": state, "error": error, "attempts": attempts, "host": socket.gethostname(),
              "pid": os.getpid(), "updated": time.time()}
    if os.environ.get("SLURM_JOB_ID"):  # which job wrote it: the driver tells a rerun's from a requeue's
        record["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    record.update(extra)
    atomic_write_json(Path(run_dir) / STATE_FILE, record)
    return record


@dataclass
class RunLock:
    """A held run lock; release() or leave the `hold_lock` context to let it go."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)  # nobody holds it from now on
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def try_lock(run_dir: Path) -> RunLock | None:
    """Take the run's lock without waiting; None if another live process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return RunLock(path=path, fd=fd)


@contextlib.contextmanager
def hold_lock(run_dir: Path) -> Iterator[RunLock | None]:
    lock = try_lock(run_dir)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the lock, as far as can be told without taking it (which would race a runner).

    On this host a dead pid means nobody; on another host the record is trusted.
    """
    try:
        info = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8") or "null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict):
        return None
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return info
    return info


def effective_state(run_dir: Path) -> str:
    """The recorded state, except that "running" with nobody holding the lock is "interrupted"."""
    state = read_state(run_dir)["state"]
    if state == "running" and lock_holder(run_dir) is None:
        return "interrupted"
    return state
