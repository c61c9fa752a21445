"""Collect a study's numbers (results table, learning curves, fits) and write the report file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipscale.io import atomic_write_json, atomic_write_text, read_jsonl
from clipscale.report import analysis, plots
from clipscale.report.html import render
from clipscale.study.results import build_results_table
from clipscale.study.spec import StudySpec


def runs_frame(study: StudySpec) -> Any:
    """One row per run of the study file as it is now, with its state."""
    import pandas as pd

    from clipscale.study.grid import plan
    from clipscale.study.state import effective_state

    cells = [r.cell() for r in plan(study)]
    rows = [{"run_id": c["run_id"], "model": c["model"], "params": c["mparams"], "gmacs": c["gmacs"],
             "distribution": c["distribution"], "dataset_train": c["dataset"], "data_size": c["data_size"],
             "samples_seen": c["samples_seen"], "compute": c["compute"],
             "compute_group": c.get("compute_group"),
             "state": effective_state(study.runs_dir / c["run_id"])} for c in cells]
    return pd.DataFrame(rows)


def learning_curves(study: StudySpec, run_ids: list[str]) -> dict[str, Any]:
    import pandas as pd

    curves = {}
    for rid in run_ids:
        recs = [r for r in read_jsonl(study.runs_dir / rid / "metrics.jsonl") if r.get("loss") is not None]
        if recs:
            curves[rid] = pd.DataFrame(recs)[["samples_seen", "loss"]]
    return curves


def _target_section(df: Any, result: dict[str, Any], dataset: str, metric: str) -> dict[str, Any]:
    points = analysis.final_points(df, dataset, metric)
    every = df[(df.dataset == dataset) & df[metric].notna()].copy()
    every["error"] = analysis.error_of(every, metric)
    fits = [f for f in result["fits"] if f["dataset"] == dataset and f["metric"] == metric]
    optimal = [o for o in result["compute_optimal"] if o["dataset"] == dataset and o["metric"] == metric]
    ylabel = metric if analysis.is_loss(metric) else f"error = 1 − {metric}"
    section = {"dataset": dataset, "metric": metric, "fits": fits, "optimal": optimal,
               "scaling_png": plots.scaling_figure(points, every[every.error > 0], fits,
                                                   title=f"{dataset}: {ylabel}", ylabel=ylabel)}
    if any(o["groups"] for o in optimal):
        section["isoflop_png"] = plots.isoflop_figure(optimal, points,
                                                      title=f"{dataset}: compute-optimal size")
    return section


def write_report(study: StudySpec, *, out: str | Path | None = None) -> Path:
    """Write the study's report (default OUTPUT_DIR/report.html) and fits.json next to the results."""
    df = build_results_table(study)
    runs = runs_frame(study)
    result: dict[str, Any] = {"fits": [], "compute_optimal": []}
    if len(df):
        result = analysis.analyse(df, metrics=study.fit.metrics, laws=study.fit.laws,
                                  bootstrap=study.fit.bootstrap, predict_compute=study.fit.predict_compute)
    atomic_write_json(study.output_dir / "fits.json", analysis.jsonable(result))
    figures = {}
    if len(runs):
        figures["grid"] = plots.grid_figure(runs)
        curves = learning_curves(study, list(runs.run_id))
        if curves:
            figures["curves"] = plots.learning_curves_figure(curves, runs)
    sections = [_target_section(df, result, d, m) for d, m in analysis.targets(df, study.fit.metrics)]
    path = Path(out) if out else study.output_dir / "report.html"
    atomic_write_text(path, render(study=study, runs=runs, table=df, figures=figures, sections=sections))
    return path
