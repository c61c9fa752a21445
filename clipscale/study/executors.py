"""Where runs execute: in this process, in N pinned local processes, or as SLURM jobs via submitit.

Every executor has the same two methods, `submit(fn, *args) -> handle` (handle has done()/result())
and `shutdown()`, so the runner's scheduling does not care where a run happens. Local processes
are pinned to their share of cores (affinity + torch threads) and GPUs (CUDA_VISIBLE_DEVICES), which
on 2 cores lets two 1-thread runs go side by side instead of fighting over both cores.

Signals: local workers run in their own process group, so a terminal's Ctrl-C reaches only the
executor, which relays SIGTERM to them (`abort`) and waits while their trainers checkpoint. They die
with the executor (PR_SET_PDEATHSIG delivers SIGTERM): after `kill -9` of `clipscale run` each worker
checkpoints, records its run as interrupted and exits, never lingering as an orphan or taking new work.
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


class Stopped(KeyboardInterrupt):
    """SIGTERM/SIGINT where no trainer handler takes it; carries the signal's name (messages, exit codes)."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        super().__init__(self.signal)


def signal_name(exc: BaseException) -> str:
    """The signal behind a KeyboardInterrupt: Python's own default handler raises it for SIGINT."""
    return str(getattr(exc, "signal", "SIGINT"))


class WorkerInterrupted(Exception):
    """A worker's task ended on a signal (an Exception, so it crosses the pool as a plain error)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal = signal_name


class WorkerStopping(Exception):
    """The worker had been told to stop before this task started: the task never ran."""


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


_WORKER: dict[str, Any] = {"parent": None, "stop": None, "busy": False}


def _orphaned() -> bool:
    return _WORKER["parent"] is not None and os.getppid() != _WORKER["parent"]


def _worker_signal(signum: int, frame: Any) -> None:
    """A worker's SIGTERM/SIGINT outside the trainer: stop the task at hand, take no new one."""
    _WORKER["stop"] = signum
    if _WORKER["busy"]:
        raise Stopped(signum)
    if _orphaned():
        os._exit(128 + signum)
    # idle while the executor lives: it is stopping and will shut this worker down


def _die_with_parent(parent: int) -> None:
    _WORKER["parent"] = parent
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _worker_signal)
    os.setpgid(0, 0)  # Ctrl-C reaches the executor only; it relays SIGTERM (abort)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM lets the trainer checkpoint
    if os.getppid() != parent:  # the executor died before prctl took effect
        os._exit(128 + signal.SIGTERM)


def call_in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """Run one task in a worker; a signal ends it as WorkerInterrupted, an orphan exits afterwards."""
    if _WORKER["stop"] is not None:
        raise WorkerStopping("this worker is stopping; the task was not started")
    _WORKER["busy"] = True
    try:
        result = fn(*args)
    except KeyboardInterrupt as exc:
        _WORKER["stop"] = _WORKER["stop"] or signal.SIGTERM
        raise WorkerInterrupted(signal_name(exc)) from None
    finally:
        _WORKER["busy"] = False
        if _orphaned():
            os._exit(128 + signal.SIGTERM)  # nobody will read the result; the run dir has the outcome
    if isinstance(result, dict) and result.get("status") == "interrupted":
        _WORKER["stop"] = signal.SIGTERM  # the trainer took the signal: take no new task
    return result


def _init_worker(parent: int, slots: Any, threads: int, cores: list[int], gpus: list[str], pin: bool) -> None:
    """Tie this worker to the executor, claim a slot and pin it to its cores/GPUs before torch is imported."""
    _die_with_parent(parent)
    slot = slots.get()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["CLIPSCALE_CPUS"] = str(threads)  # the trainer divides them (train/threads.py)
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
                                            initargs=(os.getpid(), slots, self.threads, cores, groups, pin))

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self._pool.submit(call_in_worker, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stopping: SIGTERM every worker (trainers checkpoint, idle ones take no new task), wait for them."""
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
