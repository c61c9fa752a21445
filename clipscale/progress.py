"""Progress lines of long library calls (bootstrap refits, leave-one-out folds, a study's fits).

Library functions take `progress: Progress | None = None`, a callable that gets one line at a time; they
never print (the CLI passes `print_progress`, which writes to stderr, so `--json` keeps stdout one
document). `Ticker` rate-limits a loop's done/total lines by wall time, so a log gets a line every few
seconds, not one per refit, and a loop that ends sooner says nothing. Standard library only: the CLI
imports this at start-up. Written here rather than with tqdm, whose lines are for terminals (carriage
returns, a bar), while these go to SLURM and CI logs and to callers' own loggers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

Progress = Callable[[str], None]
INTERVAL_S = 5.0  # a loop's done/total lines come at most this often (wall time)


def print_progress(line: str) -> None:
    """The CLI's `progress`: the line on stderr, flushed (SLURM logs show it at once)."""
    print(line, file=sys.stderr, flush=True)


def prefixed(progress: Progress | None, prefix: str) -> Progress | None:
    """`progress` with `prefix` before every line (e.g. the group a fit is of); None stays None."""
    if progress is None:
        return None
    return lambda line: progress(f"{prefix}{line}")


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m; unknown for an infinite or NaN time."""
    if not math.isfinite(seconds):
        return "unknown"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


class Ticker:
    """`what done/total, elapsed, ETA` lines of a loop of `total` steps, at most every `min_interval_s`
    seconds of `clock` (None: INTERVAL_S); the first comes only once that much time has passed, so a short
    loop is silent. `finish` gives the last line (total/total) only when an earlier one was given, so a log
    that showed a loop going also shows it ending. It never touches what the loop computes."""

    def __init__(self, progress: Progress | None, total: int, *, what: str,
                 min_interval_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.progress, self.total, self.what, self.clock = progress, total, what, clock
        self.interval = INTERVAL_S if min_interval_s is None else min_interval_s
        self.start = self.last = clock() if progress is not None else 0.0
        self.said = False

    def tick(self, done: int, note: str = "") -> None:
        """`done` steps of `total` are over; a line if `min_interval_s` passed since the last one."""
        if self.progress is None or done <= 0:
            return
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last, self.said = now, True
        elapsed = now - self.start
        eta = elapsed * (self.total - done) / done
        self._say(done, f"{duration(elapsed)} elapsed, ETA {duration(eta)}", note)

    def finish(self, note: str = "") -> None:
        if self.progress is None or not self.said:
            return
        self._say(self.total, f"done in {duration(self.clock() - self.start)}", note)

    def _say(self, done: int, timing: str, note: str) -> None:
        assert self.progress is not None
        extra = f" ({note})" if note else ""
        self.progress(f"{self.what} {done}/{self.total}{extra}, {timing}")
