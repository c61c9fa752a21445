"""Run a study: prepare data, then train and evaluate every unfinished run on an executor.

Idempotent by construction: each run's directory holds its state and lock (`state.py`), training
resumes from its latest checkpoint (`resume="auto"`) and evaluation skips (checkpoint, task) pairs
already in results.jsonl. So a killed `clipscale run` is simply rerun: finished runs are skipped,
interrupted ones continue, nothing is done twice. A run that raises is marked failed with its error
and the rest of the study goes on; `retry_failed` runs it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_json
from clipscale.study import hooks as default_hooks
from clipscale.study.grid import RunPlan, format_plan, plan
from clipscale.study.spec import DatasetSpec, StudySpec
from clipscale.study.state import hold_lock, read_state, write_state

EVAL_SEED = 1_000_003  # eval sets are drawn with a seed no training set uses


@dataclass(frozen=True)
class Hooks:
    """The stage functions a run calls; module-level callables, so tasks pickle to worker processes."""

    train: Callable[..., Any] = default_hooks.train
    evaluate: Callable[..., Any] = default_hooks.evaluate
    train_data: Callable[..., Any] = default_hooks.write_train_data
    eval_data: Callable[..., Any] = default_hooks.write_eval_data


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


def _trained(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "summary.json").read_text())["state"] == "finished"
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return False


def train_kwargs(task: RunTask) -> dict[str, Any]:
    """TrainConfig keyword arguments of a run (threads from the worker's pinning, if any)."""
    p = task.plan
    kwargs = {"model": p.model, "train_data": task.train_data, "data_size": p.data_size,
              "samples_seen": p.samples_seen, "seed": p.seed, "output_dir": str(p.run_dir),
              "resume": "auto", **p.train}
    if "threads" not in kwargs and os.environ.get("CLIPSCALE_THREADS"):
        kwargs["threads"] = int(os.environ["CLIPSCALE_THREADS"])
    return kwargs


def _outcome(task: RunTask, status: str, start: float, error: str | None = None) -> dict[str, Any]:
    return {"run_id": task.plan.run_id, "status": status, "error": error,
            "seconds": round(time.time() - start, 2)}


def execute_run(task: RunTask) -> dict[str, Any]:
    """Train then evaluate one run under its lock; never raises for a failure of the run itself."""
    start = time.time()
    run_dir = task.plan.run_dir
    with hold_lock(run_dir) as lock:
        if lock is None:
            return _outcome(task, "locked", start)
        state = read_state(run_dir)
        if state["state"] == "finished":
            if state.get("eval_id", task.eval_id) == task.eval_id:
                return _outcome(task, "skipped", start)
            _archive_results(run_dir, state.get("eval_id"))
        if state["state"] == "failed" and not task.retry_failed:
            return _outcome(task, "failed", start, state.get("error"))
        atomic_write_json(run_dir / "run.json", task.plan.cell())
        write_state(run_dir, "running")
        try:
            if not _trained(run_dir):
                kwargs = train_kwargs(task)
                if task.nproc > 1 or task.nnodes > 1:
                    default_hooks.train_torchrun(kwargs, nproc=task.nproc, nnodes=task.nnodes,
                                                 node_rank=task.node_rank, master=task.master)
                else:
                    task.hooks.train(kwargs)
            device = task.plan.train.get("device", "auto")
            task.hooks.evaluate(run_dir=run_dir, suite=task.eval_suite, data_root=task.eval_root,
                                device=device, batch_size=task.eval_batch_size)
        except Exception as exc:  # a failed run must not stop the study
            (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            write_state(run_dir, "failed", error=error, seconds=round(time.time() - start, 2))
            return _outcome(task, "failed", start, error)
        write_state(run_dir, "finished", seconds=round(time.time() - start, 2), eval_id=task.eval_id)
        return _outcome(task, "finished", start)


def _archive_results(run_dir: Path, old_eval_id: str | None) -> None:
    """Eval settings changed: keep the old records aside (never delete results) and evaluate anew."""
    results = run_dir / "results.jsonl"
    if results.exists():
        os.replace(results, run_dir / f"results.eval-{old_eval_id or 'old'}.jsonl")


def eval_identity(study: StudySpec) -> str:
    """What defines the evaluation of a checkpoint: the suite and the data it reads."""
    key = {"suite": study.eval.suite, "data_root": study.eval.data_root,
           "samples_per_task": None if study.eval.data_root else study.eval.samples_per_task}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def _identity_dir(root: Path, name: str, identity: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return root / f"{name}-{digest}"


def _build_once(out: Path, build: Callable[[Path], None]) -> None:
    """Build a directory under a temporary name and rename it into place: present means complete."""
    if out.exists():
        return
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    try:
        os.rename(tmp, out)
    except OSError:  # another executor finished it first
        if not out.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_dataset(ds: DatasetSpec, root: Path, hooks: Hooks) -> str:
    """The shard spec of a dataset, generating built-in synthetic shards first if needed."""
    if ds.shards is not None:
        return ds.shards
    out = _identity_dir(root, ds.name, ds.identity())
    _build_once(out, lambda d: hooks.train_data(d, samples=ds.samples, seed=ds.seed,
                                                image_size=ds.image_size, distribution=ds.synth))
    shards = sorted(p.name for p in out.glob("*.tar"))
    if not shards:
        raise ClipscaleError(f"{out}: no shards were generated")
    if len(shards) == 1:
        return str(out / shards[0])
    return str(out / f"{{{shards[0][:-4]}..{shards[-1][:-4]}}}.tar")


def prepare_eval(study: StudySpec, hooks: Hooks) -> str:
    """The eval data root: [eval] data_root, else the built-in synthetic eval sets, generated once."""
    if study.eval.data_root:
        return str(study.eval_root())
    sizes = sorted({d.image_size for d in study.datasets.values() if d.synth}) or [32]
    identity = {"seed": EVAL_SEED, "image_size": sizes[0], "samples_per_task": study.eval.samples_per_task}
    out = _identity_dir(study.data_dir, "eval", identity)
    _build_once(out, lambda d: hooks.eval_data(d, seed=EVAL_SEED, image_size=sizes[0],
                                               samples_per_task=study.eval.samples_per_task))
    return str(out)


def needs_work(run: RunPlan, *, retry_failed: bool, eval_id: str = "") -> bool:
    record = read_state(run.run_dir)
    state = record["state"]
    if state == "finished":
        return record.get("eval_id", eval_id) != eval_id
    return state != "failed" or retry_failed


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _sigterm_interrupts() -> Any:
    """`kill` of the executor stops it like Ctrl-C: workers are told to checkpoint, state stays resumable."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def run_study(study: StudySpec, *, executor: str = "local", jobs: int | None = None, dry_run: bool = False,
              retry_failed: bool = False, hooks: Hooks | None = None, log: Callable[[str], None] = print,
              slurm_backend: str = "auto") -> dict[str, Any]:
    """Train and evaluate every unfinished run of `study`; returns counts and one outcome per run."""
    from clipscale.study.schedule import make_executor, schedule

    runs = plan(study)
    if dry_run:
        log(format_plan(runs))
        return {"planned": len(runs), "total_compute": sum(r.compute for r in runs), "outcomes": []}
    study.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(study.output_dir / "plan.json", {"study": study.name, "runs": [r.cell() for r in runs]})
    todo = [r for r in runs if needs_work(r, retry_failed=retry_failed, eval_id=eval_identity(study))]
    failed_before = sum(read_state(r.run_dir)["state"] == "failed" for r in runs) if not retry_failed else 0
    log(f"study {study.name}: {len(runs)} runs, {len(runs) - len(todo) - failed_before} finished, "
        f"{failed_before} failed (use --retry-failed), {len(todo)} to run")
    exe = make_executor(executor, study, jobs=jobs, slurm_backend=slurm_backend)
    previous = _sigterm_interrupts()
    try:
        outcomes = schedule(exe, study, todo, hooks=hooks or Hooks(), retry_failed=retry_failed, log=log)
    except KeyboardInterrupt:
        getattr(exe, "abort", exe.shutdown)()
        raise
    finally:
        exe.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    counts = {s: sum(o["status"] == s for o in outcomes) for s in ("finished", "failed", "skipped", "locked")}
    log(f"study {study.name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return {**counts, "planned": len(runs), "outcomes": outcomes}
