"""Study verbs: run, status, results, report, demo. Standard library only at top level."""

from __future__ import annotations

import argparse
import json
from typing import Any

from clipscale.jsonout import add_json_flag, emit, progress_to_stderr

RUN_STATES = ("finished", "failed", "skipped", "locked", "interrupted", "pending", "running")


def _study_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY.toml", help="study file")
    p.add_argument("--output-dir", default=None,
                   help="where the study's runs and results are (default: the study file's [study] "
                   "output_dir)")


def _load(args: argparse.Namespace) -> Any:
    from clipscale.study.spec import load_study

    return load_study(args.study, output_dir=args.output_dir)


def _run(args: argparse.Namespace) -> int:
    from clipscale.study.runner import run_study

    study = _load(args)
    done: dict[str, Any] | None = None
    with progress_to_stderr(args.json):
        result = run_study(study, executor=args.executor, jobs=args.jobs, dry_run=args.dry_run,
                           retry_failed=args.retry_failed, slurm_backend=args.slurm_backend)
        if not args.dry_run and not args.no_report and not result.get("signal"):
            from clipscale.progress import print_progress
            from clipscale.study.pipeline import finish_study

            # results -> fits -> report, once every run has finished; the fits' progress on stderr
            done = finish_study(study, progress=print_progress)
    status = run_exit_status(result)
    if args.json:
        emit({"study": study.name, "output_dir": study.output_dir, "dry_run": args.dry_run,
              **run_document(result), **finish_document(done), "exit_status": status})
    return status


def run_document(result: dict[str, Any]) -> dict[str, Any]:
    """`run_study`'s facts for --json: counts per state, the run ids left over, and the signal."""
    if "unchecked" in result:  # a dry run: the plan only
        return {k: result[k] for k in ("planned", "total_compute", "unchecked")}
    keys = ("planned", "already_finished", "to_run", *RUN_STATES, "signal", "failed_runs",
            "interrupted_runs", "unfinished_runs", "running_jobs")
    return {**{k: result.get(k) for k in keys},
            "runs": [{"run_id": o["run_id"], "status": o["status"]} for o in result.get("outcomes", [])]}


def finish_document(done: dict[str, Any] | None) -> dict[str, Any]:
    """`finish_study`'s facts for --json: complete or not, what is missing, the paths it wrote."""
    if done is None:
        return {"complete": None, "missing": [], "results": None, "fits": None, "report": None}
    return {"complete": done["complete"], "missing": done["missing"],
            **{k: done.get(k) for k in ("results", "fits", "report")}}


def run_exit_status(result: dict[str, Any]) -> int:
    """`clipscale run`'s exit status, with one line on stderr when it is not 0.

    128 + signal when a signal stopped the study (runs left resumable), 1 while failed runs remain.
    """
    import signal
    import sys

    stop = result.get("signal")
    if stop:
        ids = result.get("interrupted_runs") or []
        listed = f": {', '.join(ids)}" if ids else ""
        jobs = result.get("running_jobs") or []
        running = f"; {len(jobs)} SLURM job(s) keep running: {', '.join(jobs)}" if jobs else ""
        print(f"clipscale: interrupted by {stop}; {len(ids)} run(s) left resumable{listed}{running}; "
              "rerun `clipscale run` to resume" + (" and wait for them" if jobs else ""), file=sys.stderr)
        return 128 + int(signal.Signals[stop]) if stop in signal.Signals.__members__ else 130
    left = [o["run_id"] for o in result.get("outcomes", []) if o["status"] == "interrupted"]
    if left:  # SLURM jobs stopped without requeue: the executor itself was not signalled
        print(f"clipscale: error: {len(left)} run(s) interrupted, resumable: {', '.join(left[:5])}"
              f"{', ...' if len(left) > 5 else ''}; rerun `clipscale run` to resume", file=sys.stderr)
        return 1
    locked = [o["run_id"] for o in result.get("outcomes", []) if o["status"] == "locked"]
    if locked:  # another process is training them: this study is not finished, whatever else happened
        listed = ", ".join(locked[:5]) + (", ..." if len(locked) > 5 else "")
        print(f"clipscale: error: {len(locked)} run(s) are held by another process ({listed}); rerun "
              "`clipscale run` once it is done", file=sys.stderr)
        return 1
    failed = result.get("failed_runs") or []
    if failed:
        listed = ", ".join(failed[:5]) + (", ..." if len(failed) > 5 else "")
        print(f"clipscale: error: {len(failed)} run(s) failed ({listed}); see `clipscale status`, "
              "rerun with --retry-failed", file=sys.stderr)
        return 1
    unfinished = result.get("unfinished_runs") or []
    if unfinished:  # never started (a preparing worker died), or another executor holds them
        listed = ", ".join(unfinished[:5]) + (", ..." if len(unfinished) > 5 else "")
        print(f"clipscale: error: {len(unfinished)} run(s) not finished ({listed}); see `clipscale status`, "
              "rerun `clipscale run` to run them", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from clipscale.study.status import format_status, study_status, watch_status

    study = _load(args)
    if args.watch is not None:
        return watch_status(study, every=args.watch, as_json=args.json)
    rows = study_status(study)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0


def _results(args: argparse.Namespace) -> int:
    from clipscale.study.results import write_results_table

    with progress_to_stderr(args.json):
        path, rows = write_results_table(_load(args), fmt=args.format, out=args.out)
    if args.json:
        emit({"path": path, "format": args.format, "rows": rows})
    else:
        print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from clipscale.progress import print_progress
    from clipscale.study.pipeline import finish_study

    with progress_to_stderr(args.json):
        study = _load(args)
        done = finish_study(study, require_complete=False, out=args.out, progress=print_progress)
    if args.json:
        emit({"study": study.name, "output_dir": study.output_dir, **finish_document(done)})
    return 0


def _demo(args: argparse.Namespace) -> int:
    from clipscale.progress import print_progress
    from clipscale.study.demo import demo, print_demo

    out = args.out or ("clipscale-real" if args.real else "clipscale-demo")
    with progress_to_stderr(args.json):
        doc = demo(out=out, jobs=args.jobs, real=args.real, packages=args.packages, progress=print_progress)
    if args.json:
        emit(doc)
    else:
        print_demo(doc)
    return doc["exit_status"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="train and evaluate every unfinished run of a study")
    _study_arg(p)
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="where runs train: this machine ([executor] jobs at once) or one SLURM job per run")
    p.add_argument("--jobs", type=int, default=None,
                   help="local runs at once, 1 or more (default: [executor] jobs)")
    p.add_argument("--dry-run", action="store_true", help="print the plan with compute per run and total")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--no-report", action="store_true",
                   help="stop after the runs: no results table, fits.json or report.html")
    p.add_argument("--slurm-backend", choices=("auto", "slurm", "local", "debug"), default="auto",
                   help="with --executor slurm: submitit's cluster (local/debug run the same jobs here)")
    add_json_flag(p)
    p.set_defaults(handler=_run)

    p = subparsers.add_parser("status", help="table of a study's runs: state, progress, loss, ETA")
    _study_arg(p)
    add_json_flag(p)
    p.add_argument("--watch", type=float, nargs="?", const=10.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (--watch alone: 10) until every run is finished or failed, or "
                   "Ctrl-C (default: print once)")
    p.set_defaults(handler=_status)

    p = subparsers.add_parser("results", help="rebuild the tidy results table from the run directories")
    _study_arg(p)
    p.add_argument("--format", choices=("csv", "parquet", "json"), default="csv",
                   help="table file format (json: one JSON object per row, JSON lines)")
    p.add_argument("--out", default=None, help="output file (default: OUTPUT_DIR/results.<ext>)")
    add_json_flag(p)
    p.set_defaults(handler=_results)

    p = subparsers.add_parser("report", help="fit the study's laws (fits.json) and write its HTML report, "
                                                 "also for an unfinished study (marked incomplete)")
    _study_arg(p)
    p.add_argument("--out", default=None, help="output file (default: OUTPUT_DIR/report.html)")
    add_json_flag(p)
    p.set_defaults(handler=_report)

    p = subparsers.add_parser("demo", help="the built-in demo study: generate, train, evaluate, fit, report")
    p.add_argument("--out", default=None, help="output directory (default: ./clipscale-demo, with --real "
                   "./clipscale-real)")
    p.add_argument("--jobs", type=int, default=None, help="runs at once (default: the demo's setting)")
    p.add_argument("--real", action="store_true", help="the real-data study instead: emoji images in three "
                   "styles with their CLDR captions, built first into OUT/data (default: off)")
    p.add_argument("--packages", default=None, metavar="NODE_MODULES",
                   help="with --real: read the pinned npm packages from here (default: install them with "
                   "npm into a cache folder)")
    add_json_flag(p)
    p.set_defaults(handler=_demo)
