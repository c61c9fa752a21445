"""Collect a study's numbers (results table, learning curves, saved fits) and write the report file.

The report fits nothing: it renders the saved-fit document the study's fit stage wrote
(OUTPUT_DIR/fits.json, `clipscale.study.pipeline`). It imports `clipscale.study` only inside
functions, so the study package may import the report without an import cycle.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_text, read_jsonl
from clipscale.report import analysis, plots
from clipscale.report.html import render


def runs_frame(study: Any) -> Any:
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


def learning_curves(study: Any, run_ids: list[str]) -> dict[str, Any]:
    import pandas as pd

    curves = {}
    for rid in run_ids:
        recs = [r for r in read_jsonl(study.runs_dir / rid / "metrics.jsonl") if r.get("loss") is not None]
        if recs:
            curves[rid] = pd.DataFrame(recs)[["samples_seen", "loss"]]
    return curves


def _of(items: list[dict[str, Any]], dataset: str, metric: str) -> list[dict[str, Any]]:
    return [x for x in items if x.get("dataset") == dataset and x.get("metric") == metric]


def _target_section(df: Any, fits: dict[str, Any], dataset: str, metric: str) -> dict[str, Any]:
    limit = fits.get("settings", {}).get("max_passes", analysis.DATA_CONSTRAINED_REPEATS)
    points = analysis.final_points(df, dataset, metric, max_passes=float("inf") if limit is None else limit)
    every = df[(df.dataset == dataset) & df[metric].notna()].copy()
    every["error"] = analysis.error_of(every, metric)
    saved = _of(fits["fits"], dataset, metric)
    drawn = [{**f, "fit": analysis.fitted(f)} for f in saved]
    isoflop = _of(fits.get("isoflop", []), dataset, metric)
    ylabel = metric if analysis.is_loss(metric) else f"error = 1 − {metric}"
    failed = _of(fits.get("failed", []), dataset, metric)
    section = {"dataset": dataset, "metric": metric, "fits": saved + failed,
               "differences": _of(fits.get("differences", []), dataset, metric), "isoflop": isoflop,
               "comparisons": _of(fits.get("comparisons", []), dataset, metric),
               "scaling_png": plots.scaling_figure(points, every[every.error > 0], drawn,
                                                   title=f"{dataset}: {ylabel}", ylabel=ylabel)}
    if any(o.get("budgets") for o in isoflop):
        n_column = fits.get("settings", {}).get("inputs", {}).get("N", "params")
        section["isoflop_png"] = plots.isoflop_figure(isoflop, points, n_column=n_column,
                                                      title=f"{dataset}: compute-optimal size")
    return section


def read_fits(study: Any) -> dict[str, Any]:
    path = study.output_dir / "fits.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipscaleError(
            f"{path}: no saved fits; `clipscale report {study.path}` fits them first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClipscaleError(f"{path}: not JSON ({exc})") from None
    from clipscale.fit.saved import check_fit_entry

    if not isinstance(doc, dict) or not isinstance(doc.get("fits", []), list):
        raise ClipscaleError(f"{path}: fits: expected a document with a list of fits")
    for i, entry in enumerate(doc.get("fits", [])):  # a study may have none (every fit failed)
        check_fit_entry(entry, f"{path}: fits[{i}]", names=None)
    return doc


def write_report(study: Any, *, out: str | Path | None = None, fits: dict[str, Any] | None = None,
                 table: Any = None) -> Path:
    """Render the study's report (default OUTPUT_DIR/report.html) from its saved fits (default
    OUTPUT_DIR/fits.json) and results table (default: rebuilt from the run directories)."""
    path = Path(out) if out else study.output_dir / "report.html"
    with rebuilding(path, again=f"clipscale report {study.path}" + (f" --out {out}" if out else "")):
        return _write_report(study, path, fits=fits, table=table)


def _write_report(study: Any, path: Path, *, fits: dict[str, Any] | None, table: Any) -> Path:
    from clipscale.study.results import build_results_table

    fits = read_fits(study) if fits is None else fits
    df = build_results_table(study) if table is None else table
    known, notes = _known_compute(df)
    runs = runs_frame(study)
    figures = {}
    if len(runs):
        figures["grid"] = plots.grid_figure(runs)
        curves = learning_curves(study, list(runs.run_id))
        if curves:
            figures["curves"] = plots.learning_curves_figure(curves, runs)
    pairs = analysis.targets(known, study.fit.metrics) if len(known) else []
    sections = [_target_section(known, fits, d, m) for d, m in pairs]
    atomic_write_text(path, render(study=study, runs=runs, table=df, figures=figures, sections=sections,
                                   fits=fits, notes=notes))
    return path


def mark_stale(path: Path) -> None:
    """Move an existing report aside (REPORT.stale.html) before it is rebuilt: a rebuild that fails
    must not leave the old report looking current."""
    if path.is_file():
        os.replace(path, _stale_path(path))


def _stale_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.stale{path.suffix}")


@contextlib.contextmanager
def rebuilding(path: Path, *, again: str) -> Iterator[None]:
    """The report at `path` is being rebuilt (results, fits, then the file): a failure leaves the old one
    aside as REPORT.stale.html (`mark_stale`), but Ctrl-C puts it back, since it is complete, only older;
    one line then says so and that `again` (a command) rebuilds it. Nested uses act once (the outer)."""
    moved = path.is_file()
    mark_stale(path)
    try:
        yield
    except KeyboardInterrupt:
        if moved and not path.exists():
            os.replace(_stale_path(path), path)
            print(f"clipscale: the report was not rebuilt: {path} is the previous one, left in place; "
                  f"`{again}` rebuilds it", file=sys.stderr)
        raise


def _known_compute(df: Any) -> tuple[Any, list[str]]:
    """Rows with a known, positive compute (plotted on log axes), and a note on the others: rows of
    imported models whose samples seen no source states stay in the table of every number."""
    if not len(df) or "compute" not in df:
        return df, []
    import pandas as pd

    compute = pd.to_numeric(df["compute"], errors="coerce")
    ok = compute > 0
    unknown = int((~ok).sum())
    if not unknown:
        return df, []
    note = (f"{unknown} evaluation row(s) have unknown compute (samples seen not stated by their source, "
            "e.g. imported CLIP_benchmark results): they are listed under Every number, left out of the "
            "log-scale figures below.")
    return df[ok], [note]
