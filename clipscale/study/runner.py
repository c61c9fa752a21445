"""Run a study: prepare data, then train and evaluate every unfinished run on an executor.

Idempotent by construction: each run's directory holds its state and lock (`state.py`), training
resumes from its latest checkpoint (`resume="auto"`) and evaluation skips (checkpoint, task) pairs
already in results.jsonl. So a killed `clipscale run` is simply rerun: finished runs are skipped,
interrupted ones continue, nothing is done twice. A run that raises is marked failed with its error
and the rest of the study goes on; `retry_failed` runs it again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError, error_line
from clipscale.io import atomic_write_json, atomic_write_text, dumps, read_jsonl, remove_stale_tmp
from clipscale.study import hooks as default_hooks
from clipscale.study.grid import RunPlan, format_plan, plan, stream_world_size
from clipscale.study.hooks import Hooks
from clipscale.study.prepare import check_data, check_eval, eval_identity
from clipscale.study.spec import StudySpec
from clipscale.study.state import effective_state, hold_lock, read_state, write_state
from clipscale.study.worker import Stopped, signal_name


@dataclass(frozen=True)
class RunTask:
    plan: RunPlan
    train_data: str
    eval_suite: str
    eval_root: str
    eval_batch_size: int
    retry_failed: bool = False
    nproc: int = 1  # ranks per node; > 1 (or several nodes) trains under torchrun
    hooks: Hooks = field(default_factory=Hooks)
    nnodes: int = 1
    node_rank: int = 0
    master: str | None = None
    eval_id: str = ""  # identity of the eval settings; a finished run is re-evaluated when it changes
    eval_datasets: dict[str, str] = field(default_factory=dict)  # per dataset: what changed, is redone


class RunInterrupted(Exception):
    """Training stopped on a signal before reaching its samples seen; the run stays resumable."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal = signal_name


def read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return summary if isinstance(summary, dict) else {}


def reached_target(summary: dict[str, Any], samples_seen: int) -> bool:
    """Finished means the summary says so *and* it reached the run's samples seen, never less."""
    seen = summary.get("samples_seen")
    return summary.get("state") == "finished" and isinstance(seen, int | float) and seen >= samples_seen


def train_kwargs(task: RunTask) -> dict[str, Any]:
    """TrainConfig keyword arguments of a run (threads: the trainer's share of CLIPSCALE_CPUS, the
    cores a worker or job was given; train/threads.py)."""
    p = task.plan
    kwargs = {"model": p.model, "train_data": task.train_data, "data_size": p.data_size,
              "samples_seen": p.samples_seen, "seed": p.seed, "output_dir": str(p.run_dir),
              "resume": "auto", **p.train}
    return kwargs


def _outcome(task: RunTask, status: str, start: float, error: str | None = None) -> dict[str, Any]:
    return {"run_id": task.plan.run_id, "status": status, "error": error,
            "seconds": round(time.time() - start, 2)}


def _train(task: RunTask) -> None:
    """Train (or resume) the run; raise RunInterrupted if a signal stopped it short of its samples."""
    run_dir, target = task.plan.run_dir, task.plan.samples_seen
    if reached_target(read_summary(run_dir), target):
        return
    kwargs = train_kwargs(task)
    if task.nproc > 1 or task.nnodes > 1:
        default_hooks.train_torchrun(kwargs, nproc=task.nproc, nnodes=task.nnodes, node_rank=task.node_rank,
                                     master=task.master)
        summary = read_summary(run_dir)
    else:
        returned = task.hooks.train(kwargs)
        full = isinstance(returned, dict) and "samples_seen" in returned
        summary = returned if full else read_summary(run_dir)
    if reached_target(summary, target):
        return
    if summary.get("state") == "interrupted":
        raise RunInterrupted(str(summary.get("signal") or "a signal"))
    raise ClipscaleError(f"{run_dir / 'summary.json'}: training ended at {summary.get('samples_seen')} of "
                         f"{target} samples seen (state {summary.get('state')!r})")


def _skip_or_archive(task: RunTask, start: float) -> dict[str, Any] | None:
    """The outcome of a run that must not execute now (finished, or failed without retry); else None."""
    state = read_state(task.plan.run_dir)
    if state["state"] == "finished" and not _finished_short(task.plan):
        if state.get("eval_id", task.eval_id) == task.eval_id:
            return _outcome(task, "skipped", start)
        _archive_results(task.plan.run_dir, state.get("eval_id"), state.get("eval_datasets"),
                         task.eval_datasets)
    if state["state"] == "failed" and not task.retry_failed:
        return _outcome(task, "failed", start, state.get("error"))
    return None


def _interrupted(task: RunTask, start: float, signal_name: str) -> dict[str, Any]:
    seconds = round(time.time() - start, 2)
    write_state(task.plan.run_dir, "interrupted", signal=signal_name, seconds=seconds)
    return {**_outcome(task, "interrupted", start), "signal": signal_name}


def execute_run(task: RunTask) -> dict[str, Any]:
    """Train then evaluate one run under its lock; never raises for a failure of the run itself.

    A signal (SIGTERM from SLURM or `kill`, Ctrl-C) leaves the run "interrupted", never "finished":
    the trainer checkpoints and the next `clipscale run` resumes it. Outside the trainer the signal
    arrives as KeyboardInterrupt, which is recorded and re-raised so the executor stops too.
    """
    start = time.time()
    run_dir = task.plan.run_dir
    with hold_lock(run_dir) as lock:
        if lock is None:
            return _outcome(task, "locked", start)
        skipped = _skip_or_archive(task, start)
        if skipped is not None:
            return skipped
        for directory in (run_dir, run_dir / "checkpoints"):  # no writer can be active: we hold the lock
            remove_stale_tmp(directory)
        atomic_write_json(run_dir / "run.json", task.plan.cell())
        write_state(run_dir, "running")
        p = task.plan  # one line per run start: SLURM and CI logs show what is running (stderr, unbuffered)
        print(f"start {p.run_id} ({p.model}, {p.dataset}, {p.samples_seen:,} samples)", file=sys.stderr,
              flush=True)
        try:
            _train(task)
            device = task.plan.train.get("device", "auto")
            task.hooks.evaluate(run_dir=run_dir, suite=task.eval_suite, data_root=task.eval_root,
                                device=device, batch_size=task.eval_batch_size)
        except RunInterrupted as exc:
            return _interrupted(task, start, exc.signal)
        except KeyboardInterrupt as exc:
            _interrupted(task, start, signal_name(exc))
            raise
        except Exception as exc:  # a failed run must not stop the study
            (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            error = error_line(exc)
            write_state(run_dir, "failed", error=error, seconds=round(time.time() - start, 2))
            return _outcome(task, "failed", start, error)
        write_state(run_dir, "finished", seconds=round(time.time() - start, 2), eval_id=task.eval_id,
                    eval_datasets=task.eval_datasets)
        return _outcome(task, "finished", start)


def _archive_results(run_dir: Path, old_eval_id: str | None, old: dict[str, str] | None,
                     new: dict[str, str]) -> None:
    """Eval settings changed: set aside (never delete) the records of datasets that changed or left the
    suite; evaluation then fills in what is missing (those and new datasets), nothing else."""
    results = run_dir / "results.jsonl"
    if not results.exists():
        return
    aside = run_dir / f"results.eval-{old_eval_id or 'old'}.jsonl"
    if not isinstance(old, dict):  # recorded by an older version: no per-dataset identity
        os.replace(results, aside)
        return
    stale = {name for name, digest in old.items() if new.get(name) != digest}
    keep, drop = [], []
    for record in read_jsonl(results):
        (drop if record.get("dataset") in stale else keep).append(record)
    if drop:
        atomic_write_text(aside, "".join(dumps(r) + "\n" for r in drop))
        atomic_write_text(results, "".join(dumps(r) + "\n" for r in keep))


def needs_work(run: RunPlan, *, retry_failed: bool, eval_id: str = "") -> bool:
    record = read_state(run.run_dir)
    state = record["state"]
    if state == "finished":
        return record.get("eval_id", eval_id) != eval_id or _finished_short(run)
    return state != "failed" or retry_failed


def _finished_short(run: RunPlan) -> bool:
    """Marked finished by an older version although its training was interrupted: resume it."""
    return not reached_target(read_summary(run.run_dir), run.samples_seen)


def _stop_on_signals() -> dict[int, Any]:
    """SIGTERM (SLURM, `kill`) and SIGINT stop the executor as Stopped, naming the signal; trainers catch
    their own, checkpoint and come back "interrupted"."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def run_study(study: StudySpec, *, executor: str = "local", jobs: int | None = None, dry_run: bool = False,
              retry_failed: bool = False, hooks: Hooks | None = None, log: Callable[[str], None] = print,
              slurm_backend: str = "auto") -> dict[str, Any]:
    """Train and evaluate every unfinished run of `study`; returns counts and one outcome per run.

    Also "already_finished" and "to_run" (before this call), "signal" (the signal that stopped it, else
    None), "interrupted_runs" (resumable run ids), "failed_runs" (every run of the study left failed,
    retried or not) and "unfinished_runs" (neither finished nor failed: never started, interrupted, or
    held by another process).
    """
    from clipscale.study.schedule import make_executor, schedule

    if jobs is not None and jobs < 1:
        raise ClipscaleError(f"--jobs: expected a positive number of runs at once, got {jobs}")
    remote = executor == "slurm"  # plans a cluster's study: its data may be there only
    if not remote:
        check_data(study)
    runs = plan(study, progress=log)
    unchecked = check_eval(study, missing_ok=dry_run and remote)
    if dry_run:
        from clipscale.study.spec import dataset_notes

        log(format_plan(runs))
        for line in dataset_notes(study):
            log(line)
        if unchecked:
            log(f"not checked (not found here; they must exist where the runs train): {', '.join(unchecked)}")
        return {"planned": len(runs), "total_compute": sum(r.compute for r in runs), "outcomes": [],
                "unchecked": unchecked}
    study.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(study.output_dir / "plan.json", {"study": study.name, "runs": [r.cell() for r in runs]})
    eval_id = eval_identity(study)
    exe = make_executor(executor, study, jobs=jobs, slurm_backend=slurm_backend)
    live = _live_jobs(exe, runs)  # SLURM jobs of an earlier `clipscale run`: waited for, not resubmitted
    todo = [r for r in runs if r.run_id in live
            or needs_work(r, retry_failed=retry_failed, eval_id=eval_id)]
    failed_before = sum(read_state(r.run_dir)["state"] == "failed" and r.run_id not in live
                        for r in runs) if not retry_failed else 0
    queued = f" ({len(live)} already in SLURM: {', '.join(sorted(live.values()))})" if live else ""
    done_before = len(runs) - len(todo) - failed_before
    failed = f"{failed_before} failed (use --retry-failed), " if failed_before else ""
    log(f"study {study.name}: {len(runs)} runs, {done_before} finished, {failed}{len(todo)} to run{queued}")
    previous = _stop_on_signals()
    try:
        _check_stream_world_size(study, todo, exe, executor)
        outcomes, stop = schedule(exe, study, todo, hooks=hooks or Hooks(), retry_failed=retry_failed,
                                  log=log)
    finally:
        exe.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return {**_summarize(study, runs, outcomes, stop, log, done_before=done_before),
            "already_finished": done_before, "to_run": len(todo)}


def _summary_line(name: str, counts: dict[str, int], *, total: int, done_before: int) -> str:
    """What this `clipscale run` did, by outcome (only the outcomes it had), and what was finished before
    it: "all 26 runs were already finished" rather than a row of zeros when it had nothing to do."""
    if not any(counts.values()):
        if done_before == total:
            return f"study {name}: all {total:,} runs were already finished; none ran now"
        return f"study {name}: no run ran now ({done_before:,} of {total:,} already finished)"
    did = ", ".join(f"{n:,} {state}" for state, n in counts.items() if n)
    before = f"; {done_before:,} of {total:,} were already finished" if done_before else ""
    return f"study {name}: this run: {did}{before}"


def _live_jobs(exe: Any, runs: list[RunPlan]) -> dict[str, str]:
    """run id -> job id of every run whose recorded SLURM job is still queued or running."""
    live_jobs = getattr(exe, "live_jobs", None)
    return live_jobs(runs) if live_jobs is not None else {}


def _check_stream_world_size(study: StudySpec, runs: list[RunPlan], exe: Any, executor: str) -> None:
    """Stream-mode run ids include the world size the study file describes (grid.stream_world_size);
    trained on another executor's world size, a run's batches, hence weights, would not match its id."""
    from clipscale.study.schedule import _nproc

    launched = _nproc(study, exe) * int(getattr(exe, "nnodes", 1) or 1)
    planned = stream_world_size(study)
    for run in runs:
        if run.train.get("data_mode") == "stream" and launched != planned:
            raise ClipscaleError(
                f"{study.path}: stream-mode run {run.run_id} is planned for world size {planned} "
                f"([slurm] nodes x gpus_per_node, else [executor] gpus_per_run) but --executor {executor} "
                f"would train it on world size {launched}; use the executor the study describes")


def _summarize(study: StudySpec, runs: list[RunPlan], outcomes: list[dict[str, Any]], stop: str | None,
               log: Callable[[str], None], *, done_before: int = 0) -> dict[str, Any]:
    states = ("finished", "failed", "skipped", "locked", "interrupted", "pending", "running")
    counts = {s: sum(o["status"] == s for o in outcomes) for s in states}
    log(_summary_line(study.name, counts, total=len(runs), done_before=done_before))
    interrupted = [o["run_id"] for o in outcomes if o["status"] == "interrupted"]
    still = [f"{o['run_id']} (job {o['job_id']})" for o in outcomes if o["status"] == "running"]
    if stop is not None and still:
        log(f"study {study.name}: stopped by {stop}; {len(still)} SLURM job(s) keep running: "
            f"{', '.join(still)}; rerun `clipscale run` to wait for them and report")
    if stop is not None and (interrupted or not still):
        log(f"study {study.name}: stopped by {stop}; {len(interrupted)} run(s) interrupted and resumable"
            + (f" ({', '.join(interrupted)})" if interrupted else "") + "; rerun `clipscale run` to resume")
    failed = [r.run_id for r in runs if read_state(r.run_dir)["state"] == "failed"]
    unfinished = [r.run_id for r in runs if effective_state(r.run_dir) not in ("finished", "failed")]
    return {**counts, "planned": len(runs), "outcomes": outcomes, "signal": stop,
            "interrupted_runs": interrupted, "failed_runs": failed, "unfinished_runs": unfinished,
            "running_jobs": still}
