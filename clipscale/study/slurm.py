"""SLURM executor via submitit: one job per run, torchrun inside, requeue on preemption or timeout.

submitit writes the sbatch script and pickles the task. Nodes, GPUs, time, partition and friends come
from the study's [slurm] table. Data preparation happens in the submitting process (on the login node)
before jobs are submitted.

Jobs outlive `clipscale run`: each run's job id and SLURM state are kept in its run directory
(`slurm_jobs.py`), a rerun reattaches to a live job instead of submitting a duplicate, and a run's
outcome is read from its run directory once SLURM has no more work for the job, never from the job's
result pickle (a requeued job writes one per attempt). A job that ends without recording a result
(SIGKILL, OOM, node failure) fails the run with SLURM's state as the cause.

Inside the job (`RunJob`): SIGTERM (preemption, `scontrol requeue`, `scancel`) and submitit's USR2
(90 s before the time limit) both stop the trainer at its next check, which writes latest.pt. After a
USR2 the job then requeues itself through submitit's own handler (which counts `max_requeue`); after
a SIGTERM SLURM requeues it (or, for scancel, does not). The requeued job resumes from latest.pt.

`backend`: "slurm" (or "auto", submitit's choice) on a cluster; "local"/"debug" run the very same
job objects through submitit's LocalExecutor/DebugExecutor, which is how tests cover this path
without a cluster (their jobs are followed through submitit's job objects instead of squeue).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit

from clipscale.errors import ClipscaleError
from clipscale.study import slurm_jobs
from clipscale.study.spec import StudySpec
from clipscale.study.state import read_state, write_state

BACKENDS = ("auto", "slurm", "local", "debug")


def _slurm_parameters(study: StudySpec) -> dict[str, Any]:
    s = study.slurm
    params: dict[str, Any] = {"timeout_min": s.time_min, "nodes": s.nodes, "tasks_per_node": 1,
                              "cpus_per_task": s.cpus_per_task, "name": f"clipscale-{study.name}"}
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(s, key)
        if value:
            params[f"slurm_{key}"] = value
    return params


class _TimeLimitNear(KeyboardInterrupt):
    """USR2 outside the trainer (evaluation, set-up): stop here; the job requeues itself."""

    signal = "SIGUSR2"


def _usr2_outside_trainer(signum: int, frame: Any) -> None:
    raise _TimeLimitNear()


class RunJob(submitit.helpers.Checkpointable):
    """The callable a SLURM job executes; a USR2 stops the run (checkpointed), then requeues the job."""

    def __init__(self, cpus: int = 0) -> None:
        self.cpus = cpus

    def __call__(self, fn: Callable[..., Any], task: Any) -> Any:
        if not os.environ.get("SLURM_CPUS_PER_TASK") and self.cpus:  # submitit's local backend
            os.environ["CLIPSCALE_CPUS"] = str(self.cpus)
        nnodes = getattr(task, "nnodes", 1)
        if nnodes > 1:
            env = submitit.JobEnvironment()
            task = replace(task, master=env.hostnames[0], node_rank=env.node)
            if env.node != 0:  # other nodes only contribute ranks; node 0 owns lock, state and evals
                from clipscale.study.hooks import train_torchrun
                from clipscale.study.runner import train_kwargs

                train_torchrun(train_kwargs(task), nproc=task.nproc, nnodes=nnodes, node_rank=env.node,
                               master=env.hostnames[0])
                return {"run_id": task.plan.run_id, "status": "worker-node", "error": None, "seconds": 0.0}
        on_main = threading.current_thread() is threading.main_thread()
        requeue = signal.getsignal(signal.SIGUSR2) if on_main else None  # submitit's timeout handler
        if on_main:
            signal.signal(signal.SIGUSR2, _usr2_outside_trainer)
        try:
            outcome = fn(task)
        except _TimeLimitNear:
            outcome = {"status": "interrupted", "signal": "SIGUSR2"}
        finally:
            if on_main:
                signal.signal(signal.SIGUSR2, requeue)
        timed_out = outcome.get("status") == "interrupted" and outcome.get("signal") == "SIGUSR2"
        if timed_out and callable(requeue):
            requeue(signal.SIGUSR2, None)  # checkpoint this task, `scontrol requeue`, exit
        return outcome


def _sbatch_message(exc: BaseException) -> str:
    """sbatch's own words from submitit's long error (it carries the command's stderr)."""
    text = str(exc).strip()
    errors = [ln.split("error:", 1)[1].strip() for ln in text.splitlines() if "sbatch: error:" in ln]
    if errors:
        return ("sbatch: " + "; ".join(errors))[:400]
    return (text.splitlines()[-1] if text else type(exc).__name__)[:400]


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGTERM/SIGINT wait until the block is over (a job submitted is a job recorded), then act."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


@contextlib.contextmanager
def _submit_lock(run_dir: Path) -> Iterator[None]:
    """Two `clipscale run`s on one study must not both submit a job for the same run: flock the run
    directory itself (no lock file to leave behind; a directory made here goes again if submission fails)."""
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if still empty
        raise
    finally:
        os.close(fd)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class SlurmJobHandle:
    """A run's SLURM job as the runner's scheduling sees it: done() and result(), like a Future."""

    def __init__(self, executor: SlurmExecutor, run: Any, job_id: str, submitit_job: Any = None) -> None:
        self.executor, self.run, self.job_id, self.submitit_job = executor, run, job_id, submitit_job
        self.final: slurm_jobs.JobInfo | None = None
        self._said_end = False

    def done(self) -> bool:
        if self.submitit_job is not None:  # local/debug backend: no squeue to ask; submitit's state
            ended = bool(self.submitit_job.done())
            info = slurm_jobs.JobInfo(self.job_id, str(self.submitit_job.state), source="local")
            slurm_jobs.update_record(self.run.run_dir, info)
            if ended:
                self.executor.tidy()
                self._say_end(info)
            return ended
        self.final = self.executor.tracker.ended(self.job_id)
        if self.final is not None:
            slurm_jobs.update_record(self.run.run_dir, self.final)
            self._say_end(self.final)
        else:
            info = self.executor.tracker.info.get(self.job_id)
            if info is not None:
                slurm_jobs.update_record(self.run.run_dir, info)
        return self.final is not None

    def _say_end(self, info: slurm_jobs.JobInfo) -> None:
        """One line when the job ends, so a terminal watching `clipscale run` sees more than the start."""
        if not self._said_end:
            self._said_end = True
            node = f" on {info.node}" if info.node else ""
            self.executor.log(f"{self.executor.kind} {self.job_id} of run {self.run.run_id} ended: "
                              f"{info.state}{node}")

    def cancelled(self) -> bool:
        return False

    def result(self) -> dict[str, Any]:
        """The run's outcome from its run directory; a job that recorded none failed the run."""
        return job_outcome(self.run, self.job_id, self.final, self._local_error())

    def _local_error(self) -> str | None:
        if self.submitit_job is None:
            return None
        try:
            self.submitit_job.result()
        except Exception as exc:  # the job raised or died: its words, for the cause
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return None


def job_outcome(run: Any, job_id: str, final: slurm_jobs.JobInfo | None, error: str | None = None) -> dict:
    """finished / failed / interrupted as the run directory says once its job is over; else failed."""
    record = read_state(run.run_dir)
    state = record["state"]
    outcome = {"run_id": run.run_id, "status": state, "error": record.get("error"),
               "seconds": record.get("seconds") or 0.0, "job_id": job_id}
    mine = str(record.get("slurm_job_id") or job_id) == str(job_id)
    if state in ("finished", "failed") or (state == "interrupted" and mine):
        if state == "interrupted":
            outcome["signal"] = record.get("signal") or "SIGTERM"
        return outcome
    if final is not None and final.source != "none":
        how = f"ended {final.state}" + (f" (exit {final.exit_code})" if final.exit_code else "") + \
            (f" on {final.node}" if final.node else "")
    elif final is not None:
        how = "is no longer listed by squeue (no accounting to say how it ended)"
    else:
        how = "ended"
    cause = f"SLURM job {job_id} {how} without recording a result" + (f": {error}" if error else "")
    write_state(run.run_dir, "failed", error=cause, slurm_job_id=job_id)
    return {"run_id": run.run_id, "status": "failed", "error": cause, "seconds": 0.0, "job_id": job_id}


class SlurmExecutor:
    """submit(fn, task) -> a handle on the run's job: reattached if SLURM still has it, else submitted."""

    prepares_locally = True
    poll_seconds = 5.0

    def __init__(self, study: StudySpec, *, backend: str = "auto",
                 log: Callable[[str], None] = _stderr) -> None:
        if backend not in BACKENDS:
            raise ClipscaleError(f"unknown SLURM backend {backend!r}; valid: {', '.join(BACKENDS)}")
        cluster = {"auto": None, "slurm": "slurm", "local": "local", "debug": "debug"}[backend]
        self.folder = study.output_dir / "slurm"
        self.study_path = study.path
        self._executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster,
                                                slurm_max_num_timeout=study.slurm.max_requeue)
        self._executor.update_parameters(**_slurm_parameters(study))
        self.on_cluster = self._executor.cluster == "slurm"
        self.backend = "slurm" if self.on_cluster else str(self._executor.cluster)
        self.kind = "SLURM job" if self.on_cluster else f"{self.backend} job (submitit, no SLURM)"
        self.log = log
        self.cpus = study.slurm.cpus_per_task
        self.nproc = max(1, study.slurm.gpus_per_node)
        self.nnodes = study.slurm.nodes
        self.tracker = slurm_jobs.JobTracker(min_interval=self.poll_seconds)
        self.reattached: list[str] = []
        if not self.on_cluster:
            self.poll_seconds = 0.5

    def live_jobs(self, runs: list[Any]) -> dict[str, str]:
        """run id -> job id of each run whose recorded job SLURM still has work for (one query)."""
        if not self.on_cluster:
            return {}
        recorded = {run.run_id: str(r["job_id"]) for run in runs
                    if slurm_jobs.is_cluster_job(r := slurm_jobs.read_record(run.run_dir))}
        info = slurm_jobs.query_jobs(sorted(set(recorded.values()))) if recorded else {}
        return {run_id: job for run_id, job in recorded.items() if job in info and info[job].live}

    def submit(self, fn: Callable[..., Any], task: Any) -> SlurmJobHandle:
        run = task.plan
        if self.nnodes > 1:
            task = replace(task, nnodes=self.nnodes)
        with _signals_deferred(), _submit_lock(run.run_dir):
            job_id = self.live_jobs([run]).get(run.run_id)
            if job_id is not None:
                self.reattached.append(job_id)
                self.tracker.watch(job_id)
                self.log(f"run {run.run_id}: reattached to live SLURM job {job_id}")
                return SlurmJobHandle(self, run, job_id)
            job = self._submit(fn, task)
            slurm_jobs.write_record(run.run_dir, str(job.job_id), backend=self.backend)
        self.log(f"run {run.run_id}: submitted as {self.kind} {job.job_id}; log {job.paths.stderr}")
        if not self.on_cluster:
            return SlurmJobHandle(self, run, str(job.job_id), submitit_job=job)
        self.tracker.watch(str(job.job_id))
        return SlurmJobHandle(self, run, str(job.job_id))

    def _submit(self, fn: Callable[..., Any], task: Any) -> Any:
        """One sbatch; a refusal is one line quoting sbatch, and leaves no files behind."""
        before = set(self.folder.iterdir()) if self.folder.is_dir() else set()
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr: quoted below
                return self._executor.submit(RunJob(self.cpus), fn, task)
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as exc:
            for path in (set(self.folder.iterdir()) if self.folder.is_dir() else set()) - before:
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                if not any(self.folder.iterdir()):
                    self.folder.rmdir()
            raise ClipscaleError(f"sbatch refused the job of run {task.plan.run_id}: "
                                 f"{_sbatch_message(exc)} (check [slurm] in {self.study_path})") from None

    def tidy(self) -> None:
        """Remove the empty folder literally named `%j` that submitit's local executor makes from the
        folder pattern (its jobs' files go to the job's own folder); SLURM substitutes %j itself."""
        if not self.on_cluster:
            with contextlib.suppress(OSError):
                (self.folder / "%j").rmdir()  # only if empty

    def shutdown(self) -> None:
        self.tidy()  # jobs belong to SLURM now; rerunning `clipscale run` reattaches to them
