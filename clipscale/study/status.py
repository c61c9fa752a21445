"""`clipscale status`: where every run of a study stands, read from its run directory, plus what SLURM
says about the run's recorded job (job id, state, node; asked with squeue/sacct where they exist)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clipscale.study import slurm_jobs
from clipscale.study.grid import RunPlan, plan, text_table
from clipscale.study.spec import StudySpec
from clipscale.study.state import effective_state, read_state


def last_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The last complete line of metrics.jsonl, reading only the file's tail."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def run_status(run: RunPlan, jobs: dict[str, slurm_jobs.JobInfo] | None = None) -> dict[str, Any]:
    state = effective_state(run.run_dir)
    record = read_state(run.run_dir)
    metrics = last_metrics(run.run_dir) or {}
    done = run.samples_seen if state == "finished" else int(metrics.get("samples_seen") or 0)
    rate = metrics.get("samples_per_s")
    eta = (run.samples_seen - done) / rate if state == "running" and rate else None
    return {"run_id": run.run_id, "model": run.model, "dataset": run.dataset, "data_size": run.data_size,
            "state": state, "samples_seen": done, "samples_total": run.samples_seen,
            "compute": done * run.gmacs, "compute_total": run.compute, "loss": metrics.get("loss"),
            "samples_per_s": rate, "eta_s": eta, "attempts": record.get("attempts", 0),
            "error": record.get("error"), **_job_fields(run, jobs)}


def _job_fields(run: RunPlan, jobs: dict[str, slurm_jobs.JobInfo] | None) -> dict[str, Any]:
    """The run's SLURM job: what SLURM says now if asked, else what the record last saw."""
    record = slurm_jobs.read_record(run.run_dir)
    if record is None:
        return {"job_id": None, "slurm_state": None, "node": None, "restarts": 0}
    job_id = str(record["job_id"])
    info = (jobs or {}).get(job_id)
    if info is None:
        return {"job_id": job_id, "slurm_state": record.get("state"), "node": record.get("node") or None,
                "restarts": record.get("restarts", 0)}
    return {"job_id": job_id, "slurm_state": info.state, "node": info.node or record.get("node") or None,
            "restarts": info.restarts}


def study_status(study: StudySpec) -> list[dict[str, Any]]:
    runs = plan(study)
    ids = [str(r["job_id"]) for r in (slurm_jobs.read_record(run.run_dir) for run in runs)
           if slurm_jobs.is_cluster_job(r)]  # a local-backend job's id is a pid: never ask SLURM
    jobs = slurm_jobs.query_jobs(ids) if ids and slurm_jobs.slurm_available() else {}
    rows = [run_status(r, jobs) for r in runs]
    for row in rows:  # a run whose job waits in the queue is not a run never submitted
        if row["state"] in ("pending", "interrupted") and row["slurm_state"] == "PENDING":
            row["state"] = "requeued" if row["restarts"] or row["state"] == "interrupted" else "queued"
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _job_text(r: dict[str, Any]) -> str:
    if r.get("job_id") is None:
        return ""
    requeued = f" requeued x{r['restarts']}" if r.get("restarts") else ""
    node = f" on {r['node']}" if r["node"] else ""
    return f"  job {r['job_id']} {r['slurm_state'] or '?'}{requeued}{node}"


def format_status(rows: list[dict[str, Any]]) -> str:
    cells = [[r["run_id"], r["model"], r["dataset"], r["state"],
              f"{r['samples_seen']:,}/{r['samples_total']:,}", _fmt(r["compute_total"], ".3g"),
              _fmt(r["loss"], ".3f"),
              "-" if r["eta_s"] is None else f"{r['eta_s'] / 60:.1f}m"] for r in rows]
    table = text_table(["run_id", "model", "dataset", "state", "samples", "compute", "loss", "ETA"], cells,
                       right=(4, 5, 6, 7))
    slurm = any(r.get("job_id") for r in rows)
    lines = [table[0] + ("  SLURM" if slurm else "")]
    for r, line in zip(rows, table[1:], strict=True):
        lines.append(line + _job_text(r))
        if r["state"] == "failed" and r["error"]:
            lines.append(f"    error: {r['error']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def watch_status(study: StudySpec, *, every: float, as_json: bool = False) -> int:
    """Print the status every `every` s (clearing a terminal first) until no run can change, or Ctrl-C."""
    import sys
    import time

    if every <= 0:
        from clipscale.errors import ClipscaleError

        raise ClipscaleError(f"--watch: expected a positive number of seconds, got {every:g}")
    try:
        while True:
            rows = study_status(study)
            text = json.dumps(rows) if as_json else format_status(rows)
            if sys.stdout.isatty() and not as_json:
                text = "\033[H\033[2J" + text + f"\n(every {every:g} s; Ctrl-C to stop)"
            print(text, flush=True)
            if all(r["state"] in ("finished", "failed") for r in rows):
                return 0
            time.sleep(every)
    except KeyboardInterrupt:
        return 0
