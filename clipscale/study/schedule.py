"""The runner's scheduling loop: data preparation first, each run as soon as its data exists.

Generation of the second dataset overlaps training on the first when there are several workers.
Runs go longest first (longest-processing-time order), which keeps N workers busy to the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.study.executors import EXECUTORS, make_local_executor
from clipscale.study.grid import RunPlan
from clipscale.study.runner import Hooks, RunTask, eval_identity, execute_run, prepare_dataset, prepare_eval
from clipscale.study.spec import StudySpec
from clipscale.study.state import lock_holder, write_state


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
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


def schedule(exe: Any, study: StudySpec, runs: list[RunPlan], *, hooks: Hooks, retry_failed: bool,
             log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Submit data preparation, then every run whose data is ready; collect one outcome per run."""
    if not runs:
        return []
    remote = getattr(exe, "prepares_locally", False)  # SLURM: prepare here, train there
    prep_exe = _Inline() if remote else exe
    order = sorted(runs, key=lambda r: -expected_cost(r))
    prep: dict[str, Any] = {"__eval__": prep_exe.submit(prepare_eval, study, hooks)}
    for run in order:
        if run.dataset not in prep:
            prep[run.dataset] = prep_exe.submit(prepare_dataset, study.datasets[run.dataset], study.data_dir,
                                                hooks)
    waiting, active, outcomes = list(order), {}, []
    poll = getattr(exe, "poll_seconds", 0.2)
    while waiting or active:
        progressed = False
        for run in list(waiting):
            deps = (prep["__eval__"], prep[run.dataset])
            if not all(d.done() for d in deps):
                continue
            waiting.remove(run)
            progressed = True
            try:
                eval_root, train_data = (d.result() for d in deps)
            except Exception as exc:  # data generation failed: every run on that data fails
                outcomes.append(_mark_failed(run, f"data preparation: {_error_text(exc)}"))
                log(f"[{len(outcomes)}/{len(runs)}] failed {run.run_id}: {outcomes[-1]['error']}")
                continue
            task = RunTask(plan=run, train_data=train_data, eval_suite=study.eval.suite, eval_root=eval_root,
                           eval_batch_size=study.eval.batch_size, retry_failed=retry_failed,
                           nproc=_nproc(study, exe), hooks=hooks, eval_id=eval_identity(study))
            active[exe.submit(execute_run, task)] = run
        for handle, run in list(active.items()):
            if not handle.done():
                continue
            del active[handle]
            progressed = True
            try:
                outcome = handle.result()
            except Exception as exc:  # the worker itself died (OOM kill, node failure)
                outcome = _mark_failed(run, f"worker died: {_error_text(exc)}")
            outcomes.append(outcome)
            detail = f": {outcome['error']}" if outcome.get("error") else ""
            log(f"[{len(outcomes)}/{len(runs)}] {outcome['status']} {run.run_id} ({run.model}, "
                f"{run.dataset}, {run.samples_seen} samples, {outcome['seconds']:.1f} s){detail}")
        if not progressed:
            time.sleep(poll)
    return outcomes


class _Inline:
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        from clipscale.study.executors import SequentialExecutor

        return SequentialExecutor().submit(fn, *args)
