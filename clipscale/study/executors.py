"""Where runs execute: in this process, in N pinned local processes, or as SLURM jobs via submitit.

Every executor has the same two methods, `submit(fn, *args) -> handle` (handle has done()/result())
and `shutdown()`, so the runner's scheduling does not care where a run happens. Local processes
are pinned to their share of cores (affinity + torch threads) and GPUs (CUDA_VISIBLE_DEVICES), which
on 2 cores lets two 1-thread runs go side by side instead of fighting over both cores.

Each local task runs in its own process (`ProcessExecutor`; the process's side is worker.py), so a
worker's death is its task's alone.
The process is forked from a multiprocessing fork server that imported torch, open_clip and the
training stack once (worker_preload.py), not spawned afresh with ~8 s of imports a run; it takes the
driver's environment and working directory as they were at submit time. `CLIPSCALE_START_METHOD`
(spawn|forkserver) overrides the start method; spawn is the fallback where forkserver is unavailable.
Signals: local workers run in their own process group, so a terminal's Ctrl-C reaches only the
executor, which relays SIGTERM to them (`abort`) and waits while their trainers checkpoint. They die
with the executor: a pipe whose only writer is the executor closes when it dies, and a thread of the
worker then sends the worker SIGTERM (PR_SET_PDEATHSIG does it too where the executor is the parent,
under spawn; a fork server's child has the server as its parent). After `kill -9` of `clipscale run` each
worker checkpoints, records its run as interrupted and exits, never lingering as an orphan or taking
new work.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.study.worker import Task, task_main

EXECUTORS = ("local", "slurm")
START_METHOD_ENV = "CLIPSCALE_START_METHOD"
START_METHODS = ("spawn", "forkserver")
FORKSERVER_PRELOAD = ("clipscale.study.worker_preload",)  # it imports worker.PRELOAD_MODULES
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


class WorkerDied(Exception):
    """A task's process ended without an outcome (kill -9, OOM kill): that task's failure alone.
    `pid` names the dead process (what it half-wrote can be found by it)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


def _death_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"


def start_method() -> str:
    """`CLIPSCALE_START_METHOD` if set, else forkserver where the platform has it (POSIX), else spawn."""
    available = mp.get_all_start_methods()
    name = os.environ.get(START_METHOD_ENV, "").strip()
    if not name:
        return "forkserver" if "forkserver" in available else "spawn"
    if name not in START_METHODS:
        raise ClipscaleError(f"{START_METHOD_ENV}={name!r}: expected one of {', '.join(START_METHODS)}")
    if name not in available:
        raise ClipscaleError(f"{START_METHOD_ENV}={name!r}: this platform has no {name} start method")
    return name


def _exit_fd(pid: int) -> int | None:
    """A pidfd, readable once `pid` exits, whoever its parent; None where Linux or Python has none.

    A fork server's child reports its exit through the server: were the server killed (a SIGTERM to
    the whole process group, as `timeout` sends), every child would look dead while still running."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # no pidfd (old kernel, seccomp) or already gone: the sentinel says when
        return None


@dataclass
class _Running:
    proc: Any
    conn: Any
    future: cf.Future
    exit_fd: int | None = None

    @property
    def waitable(self) -> int:
        return self.proc.sentinel if self.exit_fd is None else self.exit_fd


class ProcessExecutor:
    """Up to N tasks at once, each in its own process, pinned to its slot's `threads` cores.

    One process per task (not a ProcessPoolExecutor): a pool that loses a worker marks every pending
    and running task broken and cannot say whose worker died, so a kill -9 or OOM kill of one worker
    failed runs that never started and could hang an idle pool. Here a process that dies without an
    outcome fails its own future with `WorkerDied` naming the cause; other tasks go on, and queued ones
    start in the freed slot.

    A process per run used to cost a fresh interpreter's imports (~8 s of torch, open_clip and the
    training stack, against runs of 10-60 s). Processes are now forked from a fork server (multiprocessing
    `forkserver`) that imported them once (worker_preload.py); the server only imports, so it has no
    threads to break a fork and no CUDA context (the driver itself, with its supervisor thread, never
    forks). A task carries the driver's environment and working directory from submit time, since the
    server's are those of its own start. `CLIPSCALE_START_METHOD=spawn` restores fresh interpreters
    (for debugging); spawn is also the fallback where forkserver is unavailable.
    """

    def __init__(self, jobs: int, *, threads: int = 0, gpus_per_run: int = 0, pin: bool = True) -> None:
        self.cores = cpu_cores()
        self.threads = threads or max(1, len(self.cores) // jobs)
        n_gpus = gpu_count()
        per_run = max(1, gpus_per_run)
        self.gpus = [",".join(str(g) for g in range(i * per_run, (i + 1) * per_run))
                     for i in range(n_gpus // per_run)] if n_gpus else []
        self.pin = pin
        self.start_method = start_method()
        self._ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            self._ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))  # used when the server first starts
        self._free = list(range(jobs))
        self._queue: collections.deque[tuple[cf.Future, Callable[..., Any], tuple, dict[str, str], str]] = \
            collections.deque()
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        # never written: its read end in each worker reaches EOF when this process dies (_watch_driver)
        self._alive_r, self._alive_w = self._ctx.Pipe(duplex=False)
        self._thread = threading.Thread(target=self._supervise, name="clipscale-executor", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is shut down")
            self._queue.append((future, fn, args, dict(os.environ), os.getcwd()))
        self._wake()
        return future

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(None)

    def _start_queued(self) -> None:
        with self._lock:
            while self._free and self._queue:
                future, fn, args, environ, cwd = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    task = Task(environ=environ, cwd=cwd, payload=bytes(ForkingPickler.dumps((fn, args))))
                except Exception as exc:  # unpicklable: the task's error, as under spawn
                    future.set_exception(exc)
                    continue
                slot = self._free.pop(0)
                recv, send = self._ctx.Pipe(duplex=False)
                proc = self._ctx.Process(target=task_main, name=f"clipscale-worker-{slot}", daemon=False,
                                         args=(send, os.getpid(), self._alive_r, slot, self.threads,
                                               self.cores, self.gpus, self.pin, task))
                try:
                    proc.start()
                except Exception as exc:
                    self._free.append(slot)
                    future.set_exception(exc)
                    continue
                finally:
                    send.close()
                self._running[slot] = _Running(proc=proc, conn=recv, future=future,
                                               exit_fd=_exit_fd(proc.pid))

    def _supervise(self) -> None:
        """Start queued tasks in free slots; deliver each process's outcome, or its death, to its future."""
        while True:
            self._start_queued()
            with self._lock:
                if self._closed and not self._running and not self._queue:
                    return
                waitables = [self._wake_r] + [r.waitable for r in self._running.values()]
            ready = mp_connection.wait(waitables, timeout=1.0)
            if self._wake_r in ready:
                with contextlib.suppress(EOFError, OSError):
                    while self._wake_r.poll():
                        self._wake_r.recv()
            with self._lock:
                ended = [(slot, r) for slot, r in self._running.items() if r.waitable in ready]
            for slot, run in ended:
                self._finish(slot, run)

    def _finish(self, slot: int, run: _Running) -> None:
        message = None
        with contextlib.suppress(EOFError, OSError):
            if run.conn.poll():
                message = run.conn.recv()
        run.conn.close()
        run.proc.join()  # reaped before the future resolves: its pid no longer looks alive
        if run.exit_fd is not None:
            os.close(run.exit_fd)
        with self._lock:
            del self._running[slot]
            self._free.append(slot)
        if message is None:
            cause = _death_cause(run.proc.exitcode)
            pid = run.proc.pid
            message = (False, WorkerDied(f"worker process {pid} died ({cause}) mid-task", pid))
        if message[0]:
            run.future.set_result(message[1])
        else:
            run.future.set_exception(message[1])

    def shutdown(self) -> None:
        """Cancel queued tasks, wait for running ones."""
        with self._lock:
            self._closed = True
            while self._queue:
                self._queue.popleft()[0].cancel()
        self._wake()
        self._thread.join()

    def abort(self) -> None:
        """Stopping: SIGTERM every running task (trainers checkpoint), start no queued one, wait for them."""
        with self._lock:
            self._closed = True
            while self._queue:
                self._queue.popleft()[0].cancel()
            procs = [r.proc for r in self._running.values()]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, OSError):
                proc.terminate()
        self._wake()
        self._thread.join()


def make_local_executor(
    jobs: int, *, threads: int = 0, gpus_per_run: int = 0
) -> SequentialExecutor | ProcessExecutor:
    if jobs < 1:
        raise ClipscaleError(f"--jobs must be >= 1, got {jobs}")
    if jobs == 1:
        return SequentialExecutor(threads=threads)
    return ProcessExecutor(jobs, threads=threads, gpus_per_run=gpus_per_run)
