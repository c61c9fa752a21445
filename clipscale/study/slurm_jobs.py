"""What SLURM says about a study's jobs, and the job record each run keeps in its directory.

Job record (`RUN_DIR/slurm_job.json`, written atomically by the submitting `clipscale run`):
{"job_id", "state" (SLURM's, e.g. PENDING, RUNNING, COMPLETED), "node", "restarts", "submitted",
"updated", "reason", "backend"}. `backend` "local"/"debug" marks a job of submitit's local executor
(`--slurm-backend local`): its id is a process id, its state submitit's (RUNNING, FINISHED,
INTERRUPTED), and SLURM is never asked about it. The record lets any later `clipscale run` or
`clipscale status` find the run's job, from any login node: a rerun waits for a live job instead of
submitting a duplicate, and resubmits a run only once SLURM no longer has its job.

SLURM is asked with `squeue` first (it also lists jobs that ended in the last MinJobAge seconds, with
their final state) and `sacct` for jobs squeue no longer lists. Without accounting, `sacct` fails:
a job that squeue has stopped listing on two successive answers is then taken as ended, so a job
killed without writing its result is seen within two polls rather than never. submitit's own job
objects poll only `sacct`, which is why this is written here rather than taken from submitit.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipscale.io import atomic_write_json

RECORD_FILE = "slurm_job.json"
# Job states in which SLURM still has work to do for the job (a requeued job goes back to PENDING).
LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
                         "SUSPENDED", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD",
                         "STOPPED", "SPECIAL_EXIT"})
QUERY_TIMEOUT_S = 60


@dataclass(frozen=True)
class JobInfo:
    """One job as SLURM reports it; `source` is "squeue", "sacct", or "none" (neither lists it)."""

    job_id: str
    state: str
    node: str = ""
    reason: str = ""
    restarts: int = 0
    exit_code: str = ""
    source: str = "squeue"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(run_dir) / RECORD_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("job_id") else None


def is_cluster_job(record: dict[str, Any] | None) -> bool:
    """A record of a job SLURM knows (not one of submitit's local executor, whose id is a process id)."""
    return record is not None and record.get("backend", "slurm") == "slurm"


def write_record(run_dir: Path, job_id: str, *, state: str = "SUBMITTED", node: str = "", restarts: int = 0,
                 reason: str = "", backend: str | None = None) -> dict[str, Any]:
    previous = read_record(run_dir) or {}
    same = previous.get("job_id") == job_id
    record = {"job_id": job_id, "state": state, "node": node or (previous.get("node", "") if same else ""),
              "restarts": restarts, "reason": reason,
              "submitted": previous.get("submitted") if same else time.time(), "updated": time.time(),
              "backend": backend or (previous.get("backend", "slurm") if same else "slurm")}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(run_dir) / RECORD_FILE, record)
    return record


def update_record(run_dir: Path, info: JobInfo) -> None:
    """Write what SLURM says now, if it differs from the record (no rewrite on every poll)."""
    record = read_record(run_dir) or {}
    if record.get("job_id") != info.job_id:
        return
    now = {"state": info.state, "node": info.node or record.get("node", ""), "restarts": info.restarts,
           "reason": info.reason}
    if any(record.get(k) != v for k, v in now.items()):
        write_record(run_dir, info.job_id, **now)


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def squeue(job_ids: list[str]) -> dict[str, JobInfo] | None:
    """The jobs squeue lists (all states), or None when squeue did not answer."""
    if not job_ids:
        return {}
    proc = _run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids),
                 "-O", "JobID:|,State:|,NodeList:|,Reason:|,RestartCnt:"])
    if proc is None:
        return None
    if proc.returncode != 0:  # every id purged from slurmctld's memory: "Invalid job id specified"
        return {} if "Invalid job id" in proc.stderr else None
    jobs = {}
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5 or not parts[0]:
            continue
        restarts = int(parts[4]) if parts[4].isdigit() else 0
        jobs[parts[0]] = JobInfo(parts[0], parts[1].split()[0] if parts[1] else "UNKNOWN", parts[2],
                                 "" if parts[3] == "None" else parts[3], restarts)
    return jobs


def sacct(job_ids: list[str]) -> dict[str, JobInfo] | None:
    """The jobs accounting knows (latest record of each), or None without accounting."""
    if not job_ids:
        return {}
    proc = _run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                 "-o", "JobIDRaw,State,NodeList,ExitCode"])
    if proc is None or proc.returncode != 0:
        return None
    jobs = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and parts[0] in job_ids:  # "CANCELLED by 0" -> CANCELLED
            state = parts[1].split()[0] if parts[1] else "UNKNOWN"
            jobs[parts[0]] = JobInfo(parts[0], state, "" if parts[2] == "None assigned" else parts[2],
                                     exit_code=parts[3], source="sacct")
    return jobs


class JobTracker:
    """Asks SLURM about many jobs at once, at most every `min_interval` s; remembers unseen streaks."""

    def __init__(self, min_interval: float = 5.0) -> None:
        self.min_interval = min_interval
        self.jobs: set[str] = set()
        self.info: dict[str, JobInfo] = {}
        self._unseen: dict[str, int] = {}
        self._asked = 0.0

    def watch(self, job_id: str) -> None:
        self.jobs.add(job_id)
        self._unseen.pop(job_id, None)
        self.info.pop(job_id, None)

    def refresh(self, *, force: bool = False) -> None:
        if not self.jobs or (not force and time.monotonic() - self._asked < self.min_interval):
            return
        self._asked = time.monotonic()
        ids = sorted(self.jobs)
        listed = squeue(ids)
        if listed is None:  # squeue did not answer: nothing is known, nothing changes
            return
        missing = [j for j in ids if j not in listed]
        accounted = sacct(missing) if missing else {}
        for job_id in ids:
            if job_id in listed:
                self._unseen.pop(job_id, None)
                self.info[job_id] = listed[job_id]
            elif accounted and job_id in accounted:
                self.info[job_id] = accounted[job_id]
            else:
                self._unseen[job_id] = self._unseen.get(job_id, 0) + 1
                if self._unseen[job_id] >= 2:  # neither lists it twice running: it ended, cause unknown
                    self.info[job_id] = JobInfo(job_id, "GONE", source="none")

    def ended(self, job_id: str) -> JobInfo | None:
        """The job's final information once SLURM has no more work for it; None while it may run."""
        self.refresh()
        info = self.info.get(job_id)
        return info if info is not None and not info.live else None


def query_jobs(job_ids: list[str]) -> dict[str, JobInfo]:
    """One look at the given jobs (for `clipscale status`): squeue, then sacct for the rest."""
    listed = squeue(job_ids) or {}
    missing = [j for j in job_ids if j not in listed]
    accounted = (sacct(missing) or {}) if missing else {}
    return {**listed, **accounted}


def slurm_available() -> bool:
    import shutil

    return shutil.which("squeue") is not None
