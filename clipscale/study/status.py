"""`clipscale status`: where every run of a study stands, read from its run directory alone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clipscale.study.grid import RunPlan, plan
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


def run_status(run: RunPlan) -> dict[str, Any]:
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
            "error": record.get("error")}


def study_status(study: StudySpec) -> list[dict[str, Any]]:
    return [run_status(r) for r in plan(study)]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_status(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'run_id':<22} {'model':<9} {'dataset':<9} {'state':<11} {'samples':>17} {'compute':>9} "
             f"{'loss':>7} {'ETA':>7}"]
    for r in rows:
        eta = "-" if r["eta_s"] is None else f"{r['eta_s'] / 60:.1f}m"
        lines.append(f"{r['run_id']:<22} {r['model']:<9} {r['dataset']:<9} {r['state']:<11} "
                     f"{r['samples_seen']:>8}/{r['samples_total']:<8} {_fmt(r['compute_total'], '9.3g')} "
                     f"{_fmt(r['loss'], '7.3f')} {eta:>7}")
        if r["state"] == "failed" and r["error"]:
            lines.append(f"    error: {r['error']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)
