"""The worker side of the local executor (`executors.ProcessExecutor`): what runs inside a run's own
process. It ties the process to the executor (dies with it, turns its signals into a checkpointing
stop), takes the submitter's environment and working directory, pins cores and GPUs, runs the task and
sends back its outcome; and what the fork server preloads so that a process starts warm. Split from
executors.py, the driver side, so each side reads on its own; the driver imports this, never the
reverse.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PRELOAD_MODULES = (  # what a run's task imports: torch, open_clip, the train/eval/data stages
    "numpy",
    "torch",
    "open_clip",
    "clipscale.study.runner",  # a run task's function (execute_run)
    "clipscale.study.hooks",
    "clipscale.study.prepare",  # prepare_dataset: a data-building task
    "clipscale.train",
    "clipscale.train.loop",
    "clipscale.train.session",
    "clipscale.evals",
    "clipscale.evals.runner",
    "clipscale.models",
    "clipscale.data.loader",
    "clipscale.data.synth",
)


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

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # crosses a pipe: rebuild from the signal, not the text
        return (WorkerInterrupted, (self.signal,))


class WorkerStopping(Exception):
    """The worker had been told to stop before this task started: the task never ran."""


_WORKER: dict[str, Any] = {"driver": None, "stop": None, "busy": False}


def _orphaned() -> bool:
    """The executor is gone: the read end of its pipe is at EOF (it never writes, so readable = EOF)."""
    alive = _WORKER["driver"]
    if alive is None:
        return False
    try:
        return bool(alive.poll())
    except (OSError, EOFError):
        return True


def _worker_signal(signum: int, frame: Any) -> None:
    """A worker's SIGTERM/SIGINT outside the trainer: stop the task at hand, take no new one."""
    _WORKER["stop"] = signum
    if _WORKER["busy"]:
        raise Stopped(signum)
    if _orphaned():
        os._exit(128 + signum)
    # idle while the executor lives: it is stopping and will shut this worker down


def _watch_driver(alive: Any) -> None:
    """Block until the executor's end of the pipe closes (it died), then stop as its SIGTERM would."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            alive.recv()
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler: the trainer checkpoints


def _die_with_parent(driver: int, alive: Any) -> None:
    """Tie this worker to the executor's process `driver`, whose pipe `alive` is at EOF once it is gone."""
    _WORKER["driver"] = alive
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _worker_signal)
    os.setpgid(0, 0)  # Ctrl-C reaches the executor only; it relays SIGTERM (abort)
    if sys.platform.startswith("linux") and os.getppid() == driver:  # spawned; a fork server's child is
        libc = ctypes.CDLL(None, use_errno=True)                   # the server's, which outlives the driver
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM lets the trainer checkpoint
    threading.Thread(target=_watch_driver, args=(alive,), name="clipscale-driver-watch", daemon=True).start()
    if _orphaned():  # the executor died before the watch began
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


def import_modules(names: tuple[str, ...] | list[str]) -> list[str]:
    """Import each module that imports cleanly (the fork server's preload); return those that did not.

    Whatever a module raises, it is skipped: multiprocessing's own preload skips only ImportError, and
    anything else would kill the server and with it every run's start. A task that needs the module
    imports it again and fails with the real error, as it would under spawn."""
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    return failed


def _pin(slot: int, threads: int, cores: list[int], gpus: list[str], pin: bool) -> None:
    """Pin this process to its slot's cores/GPUs before CUDA is initialised.

    OMP_NUM_THREADS works only where torch is imported afterwards (spawn): a fork server's child has
    torch loaded already, with its OpenMP settings read from the server's environment, so its thread
    count is set here directly (no thread pool exists yet: the server only imported)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["CLIPSCALE_CPUS"] = str(threads)  # the trainer divides them (train/threads.py)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    mine = cores[slot * threads:(slot + 1) * threads]
    if pin and mine and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, mine)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Task:
    """A task as its process receives it: the submitter's environment and working directory at submit
    time, and the function and arguments pickled, so they are unpickled (their modules imported) only
    once that environment is in place. A fork server's child otherwise has the server's, from its start."""

    environ: dict[str, str]
    cwd: str
    payload: bytes


def _enter(task: Task) -> None:
    os.environ.clear()
    os.environ.update(task.environ)
    os.chdir(task.cwd)


def task_main(conn: Any, driver: int, alive: Any, slot: int, threads: int, cores: list[int], gpus: list[str],
               pin: bool, task: Task) -> None:
    """A task's own process: tie it to the executor, take its environment, pin it, run the task, send back
    (ok, value)."""
    _die_with_parent(driver, alive)
    try:
        _enter(task)
        _pin(slot, threads, cores, gpus, pin)
        fn, args = pickle.loads(task.payload)
        message: tuple[bool, Any] = (True, call_in_worker(fn, *args))
    except Exception as exc:
        message = (False, exc)
    except BaseException as exc:  # SystemExit and the like: still an outcome, as a plain error
        message = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
    try:
        conn.send(message)
    except Exception as exc:  # an unpicklable result or exception: its text still gets through
        conn.send((False, RuntimeError(f"{type(message[1]).__name__}: {message[1]} ({exc})")))
    conn.close()
