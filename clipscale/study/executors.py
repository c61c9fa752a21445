"""Where runs execute: in this process, in N pinned local processes, or as SLURM jobs via submitit.

Every executor has the same two methods, `submit(fn, *args) -> handle` (handle has done()/result())
and `shutdown()`, so the runner's scheduling does not care where a run happens. Local processes
are pinned to their share of cores (affinity + torch threads) and GPUs (CUDA_VISIBLE_DEVICES), which
on 2 cores lets two 1-thread runs go side by side instead of fighting over both cores. Local workers
die with the executor (PR_SET_PDEATHSIG): killing `clipscale run` leaves no orphan holding a lock.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from clipscale.errors import ClipscaleError

EXECUTORS = ("local", "slurm")


def cpu_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def gpu_count() -> int:
    """Visible CUDA devices, without importing torch (workers must set CUDA_VISIBLE_DEVICES first)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return len([n for n in os.listdir("/dev") if n.startswith("nvidia") and n[6:].isdigit()]) \
        if os.path.isdir("/dev") else 0


class SequentialExecutor:
    """Runs each task in this process, at submit time (jobs = 1): the simplest and easiest to debug."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # the runner decides what an exception means
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM lets the trainer checkpoint


def _init_worker(slots: Any, threads: int, cores: list[int], gpus: list[str], pin: bool) -> None:
    """Claim a slot and pin this worker to its cores/GPUs before torch is imported."""
    _die_with_parent()
    slot = slots.get()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["CLIPSCALE_THREADS"] = str(threads)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    mine = cores[slot * threads:(slot + 1) * threads]
    if pin and mine and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, mine)


class ProcessExecutor:
    """N worker processes (spawned, so each starts clean), each pinned to `threads` cores."""

    def __init__(self, jobs: int, *, threads: int = 0, gpus_per_run: int = 0, pin: bool = True) -> None:
        cores = cpu_cores()
        self.threads = threads or max(1, len(cores) // jobs)
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        for i in range(jobs):
            slots.put(i)
        n_gpus = gpu_count()
        per_run = max(1, gpus_per_run)
        groups = [",".join(str(g) for g in range(i * per_run, (i + 1) * per_run))
                  for i in range(n_gpus // per_run)] if n_gpus else []
        self._pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                            initargs=(slots, self.threads, cores, groups, pin))

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Interrupted: SIGTERM every worker (trainers checkpoint on it), then wait for them."""
        for proc in list(getattr(self._pool, "_processes", {}).values()):  # no public API for this
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_local_executor(
    jobs: int, *, threads: int = 0, gpus_per_run: int = 0
) -> SequentialExecutor | ProcessExecutor:
    if jobs < 1:
        raise ClipscaleError(f"--jobs must be >= 1, got {jobs}")
    if jobs == 1:
        return SequentialExecutor(threads=threads)
    return ProcessExecutor(jobs, threads=threads, gpus_per_run=gpus_per_run)
