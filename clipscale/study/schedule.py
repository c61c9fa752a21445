"""The runner's scheduling loop: data preparation first, each run as soon as its data exists.

Generation of the second dataset overlaps training on the first when there are several workers.
Runs go longest first (longest-processing-time order), which keeps N workers busy to the end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from clipscale.errors import ClipscaleError, error_line
from clipscale.study.executors import EXECUTORS, WorkerDied, make_local_executor
from clipscale.study.grid import RunPlan
from clipscale.study.hooks import Hooks
from clipscale.study.prepare import (
    discard_partial_builds,
    eval_datasets,
    eval_identity,
    prepare_dataset,
    prepare_eval,
)
from clipscale.study.runner import RunTask, execute_run
from clipscale.study.spec import StudySpec
from clipscale.study.state import effective_state, lock_holder, read_state, write_state
from clipscale.study.worker import WorkerInterrupted, WorkerStopping
from clipscale.study.worker import signal_name as _signal_name


def make_executor(name: str, study: StudySpec, *, jobs: int | None, slurm_backend: str = "auto") -> Any:
    if name == "local":
        return make_local_executor(jobs or study.executor.jobs, threads=study.executor.threads_per_job,
                                   gpus_per_run=study.executor.gpus_per_run)
    if name == "slurm":
        from clipscale.study.slurm import SlurmExecutor

        return SlurmExecutor(study, backend=slurm_backend)
    raise ClipscaleError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")


PER_SAMPLE_OVERHEAD_GMACS = 0.002  # data + optimizer cost per sample, in GMACs (tiny ladder, CPU)


def expected_cost(run: RunPlan) -> float:
    """Relative wall time of a run: compute plus a per-sample overhead that dominates tiny models."""
    return run.samples_seen * (run.gmacs + PER_SAMPLE_OVERHEAD_GMACS)


def _nproc(study: StudySpec, exe: Any) -> int:
    return int(getattr(exe, "nproc", 0) or study.executor.gpus_per_run or 1)


def _mark_failed(run: RunPlan, error: str) -> dict[str, Any]:
    if lock_holder(run.run_dir) is None:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_state(run.run_dir, "failed", error=error)
    return {"run_id": run.run_id, "status": "failed", "error": error, "seconds": 0.0}


def _error_text(exc: BaseException) -> str:
    return error_line(exc)


def schedule(exe: Any, study: StudySpec, runs: list[RunPlan], *, hooks: Hooks, retry_failed: bool,
             log: Callable[[str], None]) -> tuple[list[dict[str, Any]], str | None]:
    """Submit data preparation, then every run whose data is ready; one outcome per run, and the signal.

    A signal (KeyboardInterrupt here, or a run that comes back "interrupted") stops the study: no new
    run starts, running ones checkpoint, and their outcomes say "interrupted".
    """
    if not runs:
        return [], None
    loop = _Loop(exe, study, runs, hooks=hooks, retry_failed=retry_failed, log=log)
    try:
        loop.prepare()
        stop = loop.run()
    except KeyboardInterrupt as exc:
        stop = _signal_name(exc)
    if stop is not None:
        loop.stop(stop)
    return loop.outcomes, stop


class _Loop:
    """The state of one scheduling pass: runs waiting for data, runs submitted, outcomes so far."""

    def __init__(self, exe: Any, study: StudySpec, runs: list[RunPlan], *, hooks: Hooks, retry_failed: bool,
                 log: Callable[[str], None]) -> None:
        self.exe, self.study, self.hooks, self.retry_failed, self.log = exe, study, hooks, retry_failed, log
        self.remote = getattr(exe, "prepares_locally", False)  # SLURM: prepare here, train there
        self.total = len(runs)
        self.waiting = sorted(runs, key=lambda r: -expected_cost(r))
        self.active: dict[Any, RunPlan] = {}
        self.current: RunPlan | None = None  # the run being submitted (runs inline at jobs 1)
        self.outcomes: list[dict[str, Any]] = []
        self.stop_signal: str | None = None
        self.prep: dict[str, Any] = {}
        self.eval_datasets = eval_datasets(study)  # walked once per pass, not per run
        self.eval_id = eval_identity(study, self.eval_datasets)

    def prepare(self) -> None:
        """Submit the eval sets' and each dataset's preparation (inline at jobs 1 and for SLURM)."""
        prep_exe = _Inline() if self.remote else self.exe
        self.prep["__eval__"] = prep_exe.submit(prepare_eval, self.study, self.hooks)
        for run in self.waiting:
            if run.dataset not in self.prep:
                self.prep[run.dataset] = prep_exe.submit(prepare_dataset, self.study.datasets[run.dataset],
                                                         self.study.data_dir, self.hooks)

    def run(self) -> str | None:
        """Schedule until every run has an outcome; the signal's name if a run was interrupted."""
        poll = getattr(self.exe, "poll_seconds", 0.2)
        while (self.waiting or self.active) and self.stop_signal is None:
            progressed = self._submit_ready()
            progressed = self._collect() or progressed
            if not progressed and self.stop_signal is None:
                time.sleep(poll)
        return self.stop_signal

    def _collect(self) -> bool:
        """Record the outcome of every run that came back; whether any did."""
        done = [(handle, run) for handle, run in self.active.items() if handle.done()]
        for handle, run in done:
            del self.active[handle]
            outcome = self._result(handle, run)
            if outcome is not None:
                self._record(run, outcome)
        return bool(done)

    def _submit_ready(self) -> bool:
        progressed = False
        for run in list(self.waiting):
            deps = (self.prep["__eval__"], self.prep[run.dataset])
            if self.stop_signal is not None or not all(d.done() for d in deps):
                continue
            self.waiting.remove(run)
            progressed = True
            try:
                eval_root, train_data = (d.result() for d in deps)
            except (WorkerInterrupted, WorkerStopping) as exc:  # a signal, not a failure of the data
                self.stop_signal = getattr(exc, "signal", "SIGTERM")
                continue
            except WorkerDied as exc:  # the preparing process was killed: the run never started
                discard_partial_builds(self.study.data_dir, exc.pid)
                self._record(run, _not_started(run, f"data preparation: {exc}"))
                continue
            except Exception as exc:  # data generation failed: every run on that data fails
                self._record(run, _mark_failed(run, f"data preparation: {_error_text(exc)}"))
                continue
            task = RunTask(plan=run, train_data=train_data, eval_suite=self.study.eval.suite,
                           eval_root=eval_root, eval_batch_size=self.study.eval.batch_size,
                           retry_failed=self.retry_failed, nproc=_nproc(self.study, self.exe),
                           hooks=self.hooks, eval_id=self.eval_id, eval_datasets=self.eval_datasets)
            self.current = run
            self.active[self.exe.submit(execute_run, task)] = run
            self.current = None
            self._collect()  # at jobs 1 the run is over already: an interrupted one stops the next
        return progressed

    def _result(self, handle: Any, run: RunPlan) -> dict[str, Any] | None:
        """The run's outcome; None if its worker was stopping and never started it."""
        try:
            outcome = handle.result()
        except WorkerStopping:
            self.stop_signal = self.stop_signal or "SIGTERM"
            return None
        except WorkerInterrupted as exc:  # a signal outside the trainer (evaluation, data loading)
            outcome = _from_disk(run, exc.signal) or _interrupted_outcome(run, exc.signal)
        except WorkerDied as exc:  # its process was killed (kill -9, OOM): this run's failure alone
            return _mark_failed(run, str(exc))
        except Exception as exc:  # the worker itself failed (node failure, an unpicklable result)
            return _mark_failed(run, f"worker died: {_error_text(exc)}")
        if outcome["status"] == "interrupted" and not self.remote:  # SLURM requeues its own
            self.stop_signal = self.stop_signal or outcome.get("signal") or "SIGTERM"
        return outcome

    def _record(self, run: RunPlan, outcome: dict[str, Any]) -> dict[str, Any]:
        self.outcomes.append(outcome)
        detail = f": {outcome['error']}" if outcome.get("error") else ""
        if outcome.get("signal"):
            detail = f": {outcome['signal']}, resumable"
        self.log(f"[{len(self.outcomes)}/{self.total}] {outcome['status']} {run.run_id} ({run.model}, "
                 f"{run.dataset}, {run.samples_seen:,} samples, {outcome['seconds']:.1f} s){detail}")
        return outcome

    def stop(self, signal_name: str) -> None:
        """Start nothing more; let running runs checkpoint, then record what each of them became.

        SLURM jobs are not stopped: they belong to SLURM, and a rerun reattaches to them."""
        if self.remote:
            self.log(f"stopping on {signal_name}: no more jobs are submitted; {len(self.active)} SLURM "
                     "job(s) keep running and a rerun of `clipscale run` waits for them")
        else:  # at jobs 1 the interrupted run came back before this: it has checkpointed already
            running = len(self.active) + (self.current is not None)
            self.log(f"stopping on {signal_name}: " + (f"{running} running run(s) checkpoint, none starts"
                                                       if running else "no further run starts"))
        with _signals_ignored():
            abort = getattr(self.exe, "abort", None)
            if abort is not None and not self.remote:
                abort()
            stopped = [*self.active.items(), *([(None, self.current)] if self.current else [])]
            for handle, run in stopped:
                outcome = self._after_stop(handle, run, signal_name)
                if outcome is not None:
                    self._record(run, outcome)
            self.active.clear()

    def _after_stop(self, handle: Any, run: RunPlan, signal_name: str) -> dict[str, Any] | None:
        """A stopped run's outcome, from its result if it came back, else from its run directory."""
        job_id = getattr(handle, "job_id", None)
        if self.remote and job_id is not None and not handle.done():  # still SLURM's: not ours to judge
            return {"run_id": run.run_id, "status": "running", "error": None, "seconds": 0.0,
                    "job_id": job_id}
        if handle is not None and handle.done() and not handle.cancelled():
            try:
                return handle.result()
            except WorkerStopping:
                return None  # it never started
            except Exception:
                pass  # the worker died or was interrupted: the run directory says what happened
        return _from_disk(run, signal_name)


def _not_started(run: RunPlan, why: str) -> dict[str, Any]:
    """A run that never started: left pending (no state written), so a plain rerun runs it."""
    return {"run_id": run.run_id, "status": "pending", "error": why, "seconds": 0.0}


def _interrupted_outcome(run: RunPlan, signal_name: str) -> dict[str, Any]:
    return {"run_id": run.run_id, "status": "interrupted", "error": None, "seconds": 0.0,
            "signal": signal_name}


def _from_disk(run: RunPlan, signal_name: str) -> dict[str, Any] | None:
    """finished or interrupted as its state says; None if it never started or another process has it."""
    state = effective_state(run.run_dir)
    if state not in ("finished", "interrupted"):
        return None
    record = read_state(run.run_dir)
    outcome = {"run_id": run.run_id, "status": state, "error": None, "seconds": record.get("seconds") or 0.0}
    if state == "interrupted":
        outcome["signal"] = record.get("signal") or signal_name
    return outcome


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While stopping, a second Ctrl-C or SIGTERM must not cut the checkpoints short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Inline:
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        from clipscale.study.executors import SequentialExecutor

        return SequentialExecutor().submit(fn, *args)
