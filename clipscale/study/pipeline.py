"""A study's last stages: results table → fitted laws (OUT/fits.json) → report (OUT/report.html).

`clipscale run` calls `finish_study` once every run has finished; `clipscale report` calls it on a
partial study too, and the report then says which runs are missing. All fitting goes through
`clipscale.fit.table.fit_table_results` (what `clipscale fit` runs), grouped by training
distribution, and fits.json is `clipscale fit --save`'s document with a readable, unique group name
per fit (`clipscale.fit.groups`: DATASET/METRIC/DISTRIBUTION/LAW), so `clipscale predict OUT/fits.json
--group synth_retrieval/image_retrieval_recall@5/uniform/frontier --C 1e3` works on a study's output.

Data-constrained runs (more than `[fit] max_passes` passes over their unique data, default 10) are
one definition for the fits and the isoFLOP analysis: they are left out of both, except for laws that
model repetition (an input U of unique samples); `max_passes = inf` keeps them. fits.json's
`left_out` counts them, and the text output and the report always say how many (also 0 of N).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipscale.errors import error_line
from clipscale.fit.groups import study_group
from clipscale.progress import Progress, prefixed
from clipscale.study.spec import StudySpec

SAVED_FORMAT = "clipscale-fits/1"  # clipscale.fit.result's saved-fit document, extended with the keys below
# results-table column of each law input: C compute (GMACs), N params (M) without token and positional
# embeddings (`[fit] n_column`, default params_nonemb), D/S samples seen, U unique
INPUT_COLUMNS = {"C": "compute", "N": "params_nonemb", "D": "samples_seen", "U": "data_size",
                 "S": "samples_seen"}


def input_columns(study: StudySpec) -> dict[str, str]:
    """INPUT_COLUMNS with N the study's `[fit] n_column` (laws in N and the isoFLOP analysis)."""
    return {**INPUT_COLUMNS, "N": study.fit.n_column}


def missing_runs(study: StudySpec) -> list[dict[str, str]]:
    """Runs of the study file that are not finished, with their state (and error, if failed)."""
    from clipscale.study.grid import plan
    from clipscale.study.state import effective_state, read_state

    out = []
    for r in plan(study):
        state = effective_state(r.run_dir)
        if state != "finished":
            entry = {"run_id": r.run_id, "state": state}
            if state == "failed":
                entry["error"] = str(read_state(r.run_dir).get("error") or "")
            out.append(entry)
    return out


def _rows_for(points: Any, inputs: tuple[str, ...]) -> Any:
    """A law's rows: without the data-constrained runs (`constrained`: over [fit] max_passes), unless
    the law models repetition (an input U)."""
    return points if "U" in inputs else points[~points.constrained]


def _fit_call(rows: Any, *, law: str, metric: str, by: str | None, study: StudySpec,
              progress: Progress | None = None, seed: int = 0) -> Any:
    from clipscale.fit.laws import get_law
    from clipscale.fit.table import fit_table_results
    from clipscale.report.analysis import is_loss

    inputs, columns = get_law(law).inputs, input_columns(study)
    kwargs: dict[str, Any] = {k: (columns[k] if k in inputs else None) for k in columns}
    if study.fit.frontier != "none":
        kwargs["frontier"] = study.fit.frontier
    fix = {k: float(v) for k, v in study.fit.fix.items() if k in get_law(law).params}
    if fix:
        kwargs["fix"] = fix
    return fit_table_results(rows, law=law, y=metric, error=not is_loss(metric), loss=is_loss(metric),
                             by=by, where=None, bootstrap=study.fit.bootstrap, holdout=None, loo=False,
                             seed=seed, run="run_id", huber_delta=1e-3, link=study.fit.link,
                             objective=study.fit.objective, progress=progress, **kwargs)


def _predictions(result: Any, budgets: list[float]) -> list[dict[str, Any]]:
    import numpy as np

    c = np.asarray(budgets, float)
    pred = result.predict(C=c)
    samples = result.predict_samples(C=c)
    out = []
    for i, ci in enumerate(c):
        lo, hi = (np.nanpercentile(samples[:, i], [2.5, 97.5]) if len(samples) else (np.nan, np.nan))
        out.append({"compute": float(ci), "error": float(pred[i]), "ci": [float(lo), float(hi)]})
    return out


def _entry(doc_fit: dict[str, Any], result: Any, rows: Any, meta: dict[str, Any], study: StudySpec,
           name: str) -> dict[str, Any]:
    entry = {**doc_fit, "frontier": study.fit.frontier, **result.to_dict(), **meta, "group": name,
             "n_runs": int(rows.run_id.nunique())}
    from clipscale.fit.laws import get_law

    if get_law(result.law).inputs == ("C",):
        budgets = list(study.fit.predict_compute) or [rows.compute.max() * 10, rows.compute.max() * 100]
        entry["predictions"] = _predictions(result, budgets)
    return entry


def fit_target(points: Any, *, dataset: str, metric: str, law: str, study: StudySpec,
               progress: Progress | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list, list[dict[str, Any]]]:
    """One law on one target, per distribution: (saved-fit entries, failures, exponent differences,
    comparisons across compute)."""
    from clipscale.fit.laws import get_law

    rows = _rows_for(points, get_law(law).inputs)
    names = {d: study_group(dataset=dataset, metric=metric, distribution=d, law=law)
             for d in rows.distribution.unique()}
    try:
        doc, results = _fit_call(rows, law=law, metric=metric, by="distribution", study=study,
                                 progress=progress)
        per_group = [(f, r, g) for f, (_, r, g) in zip(doc["fits"], results, strict=True)]
        differences = doc.get("differences", [])
    except Exception:  # one group failed: fit each alone so the others still count, the failure is shown
        per_group, differences, failed = [], [], []
        for i, (d, sub) in enumerate(rows.groupby("distribution", sort=True)):
            try:  # seed i, as the i-th group of the joint call (fit_table_results): the same fit either way
                doc, ((_, r, g),) = _fit_call(sub, law=law, metric=metric, by=None, study=study, seed=i)
                per_group.append(({**doc["fits"][0], "group": d}, r, g))
            except Exception as exc:  # too few points, no convergence: shown in the report
                failed.append({"group": names[d], "dataset": dataset, "metric": metric, "distribution": d,
                               "law": law, "frontier": study.fit.frontier,
                               "n_runs": int(sub.run_id.nunique()),
                               "error": error_line(exc)})
        if not per_group and not failed:
            raise
    else:
        failed = []
    entries = [_entry(f, r, g, {"dataset": dataset, "metric": metric, "distribution": f["group"], "law": law},
                      study, names[f["group"]]) for f, r, g in per_group]
    if study.fit.check_largest:
        for entry, (_, _, g) in zip(entries, per_group, strict=True):
            check = prefixed(progress, f"extrapolation check {entry['group']}: ")
            entry.update(_check_largest(g, law=law, metric=metric, study=study, frontier=entry["frontier"],
                                        progress=check))
    for d in differences:
        d.update(dataset=dataset, metric=metric, law=law)
    compared = _comparisons([(e["distribution"], r) for e, (_, r, _) in zip(entries, per_group, strict=True)],
                            study=study)
    return entries, failed, differences, [{**c, "dataset": dataset, "metric": metric, "law": law}
                                          for c in compared]


def _comparisons(fits: list[tuple[Any, Any]], *, study: StudySpec) -> list[dict[str, Any]]:
    """`clipscale compare` between the distributions (`fit.analyses.compare`): each pair's error
    difference at [fit] predict_compute (default: the largest compute measured, 10x and 100x) and their
    crossover, with bootstrap CIs. Needs a law of compute alone and two or more distributions."""
    from clipscale.fit.analyses.compare import compare_fits
    from clipscale.fit.laws import get_law

    if len(fits) < 2 or get_law(fits[0][1].law).inputs != ("C",):
        return []
    doc = compare_fits(fits, at=list(study.fit.predict_compute) or None)
    return [{**pair, "range": doc["range"], "level": doc["level"]} for pair in doc["pairs"]]


def _check_largest(rows: Any, *, law: str, metric: str, study: StudySpec, frontier: str,
                   progress: Progress | None = None) -> dict[str, Any]:
    """`extrapolation_check` of one fit entry (`clipscale.study.extrapolation`): the same fit call on the
    rows below the largest compute group."""
    from clipscale.fit.laws import get_law
    from clipscale.study.extrapolation import check_largest

    spec = get_law(law)
    free = [p for p in spec.params if p not in study.fit.fix]
    def refit(sub: Any) -> Any:
        return _fit_call(sub, law=law, metric=metric, by=None, study=study, progress=progress)[1][0][1]

    return check_largest(rows, inputs={k: input_columns(study)[k] for k in spec.inputs}, n_params=len(free),
                         on_frontier=frontier != "none", refit=refit)


def isoflop_target(points: Any, *, dataset: str, metric: str, study: StudySpec) -> list[dict[str, Any]]:
    """Chinchilla approach 2 per distribution on the isoFLOP groups (`clipscale.fit.analyses.isoflop`)."""
    rows = points[points.compute_group.notna() & ~points.constrained]
    out = []
    for distribution, sub in rows.groupby("distribution", sort=True):
        entry: dict[str, Any] = {"dataset": dataset, "metric": metric, "distribution": distribution,
                                 "n_runs": int(sub.run_id.nunique())}
        try:
            entry.update(_isoflop(sub, bootstrap=study.fit.bootstrap, n_column=study.fit.n_column))
        except ImportError as exc:
            entry["error"] = f"isoFLOP analysis unavailable: {exc}"
        except Exception as exc:  # fewer than two budgets with an interior optimum: no exponent, say why
            entry.update(error=error_line(exc), a=None, b=None,
                         budgets=_budgets_alone(sub, study.fit.n_column))
        out.append(entry)
    return out


def _isoflop(rows: Any, *, bootstrap: int, n_column: str) -> dict[str, Any]:
    """`fit.isoflop.isoflop` on a study's isoFLOP groups; where the data allow no CI, `ci_note` says why."""
    from clipscale.fit.analyses.isoflop import isoflop

    kwargs = {"C": "compute_group", "N": n_column, "y": "error", "seed": 0}
    doc = isoflop(rows, bootstrap=bootstrap, **kwargs)
    # the echo of its inputs goes under "inputs" ("error" there means 1 - y; here it names a failure)
    doc["inputs"] = {k: doc.pop(k) for k in (*kwargs, "where", "k", "error", "gap") if k in doc}
    return doc


def _budgets_alone(rows: Any, n_column: str) -> list[dict[str, Any]]:
    """Each budget's parabola (`fit.isoflop.parabola_optimum`) when there are too few for an exponent."""
    import numpy as np

    try:
        from clipscale.fit.analyses.isoflop import MIN_SIZES, parabola_optimum
    except ImportError:
        return []
    out = []
    for level, g in rows.groupby("compute_group", sort=True):
        if g[n_column].nunique() >= MIN_SIZES:
            opt = parabola_optimum(np.log(g[n_column].to_numpy(float)), np.log(g.error.to_numpy(float)))
            out.append({"C": float(level), "N_opt": opt["N_opt"], "y_opt": opt["y_opt"], "edge": opt["edge"],
                        "n_runs": len(g)})
    return out


def _off_law(points: Any, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each data-constrained run's error against its distribution's fitted law of C at its compute."""
    from clipscale.report.analysis import fitted

    out = []
    for e in entries:
        if set(e.get("input_ranges", {})) != {"C"}:
            continue
        law = fitted(e)
        for _, row in points[points.constrained & (points.distribution == e["distribution"])].iterrows():
            predicted = float(law.predict(C=[row.compute])[0])
            out.append({"group": e["group"], "dataset": e["dataset"], "metric": e["metric"],
                        "run_id": row.run_id, "model": row.model, "data_size": int(row.data_size),
                        "repeats": float(row.repeats), "compute": float(row.compute),
                        "error": float(row.error), "law_error": predicted,
                        "ratio": float(row.error) / predicted})
    return out


def fit_stage(study: StudySpec, df: Any, *, missing: list[dict[str, str]] | None = None,
              progress: Progress | None = None) -> dict[str, Any]:
    """The fits.json document: every [fit] law on every target, the isoFLOP analysis, what was left out.
    `progress` (clipscale.progress) gets a line per target and law, then the fits' own lines."""
    from clipscale.report.analysis import final_points, targets

    limit = study.fit.max_passes
    doc: dict[str, Any] = {
        "format": SAVED_FORMAT, "by": "distribution", "study": study.name, "complete": not missing,
        "missing_runs": list(missing or []),
        "settings": {"metrics": list(study.fit.metrics), "laws": list(study.fit.laws),
                     "frontier": study.fit.frontier, "max_passes": None if limit == float("inf") else limit,
                     "fix": dict(study.fit.fix), "check_largest": study.fit.check_largest,
                     "bootstrap": study.fit.bootstrap, "inputs": input_columns(study)},
        "fits": [], "failed": [], "differences": [], "comparisons": [], "isoflop": [], "constrained_runs": [],
        "off_law": []}
    fitted_runs: set[str] = set()
    listed = targets(df, study.fit.metrics) if len(df) else []
    for i, (dataset, metric) in enumerate(listed):
        points = final_points(df, dataset, metric, max_passes=limit)
        fitted_runs |= set(points.run_id)
        for j, law in enumerate(study.fit.laws):
            if progress is not None:
                progress(f"fits: target {i + 1}/{len(listed)} {dataset} {metric}, law {law} "
                         f"({j + 1}/{len(study.fit.laws)})")
            entries, failed, diffs, compared = fit_target(points, dataset=dataset, metric=metric, law=law,
                                                          study=study, progress=progress)
            doc["fits"] += entries
            doc["failed"] += failed
            doc["differences"] += diffs
            doc["comparisons"] += compared
            doc["off_law"] += _off_law(points, entries) if j == 0 else []
        doc["isoflop"] += isoflop_target(points, dataset=dataset, metric=metric, study=study)
        repeated = set(points[points.constrained].run_id)
        doc["constrained_runs"] = sorted(set(doc["constrained_runs"]) | repeated)
    doc["left_out"] = {"max_passes": doc["settings"]["max_passes"], "runs": len(doc["constrained_runs"]),
                       "of": len(fitted_runs), "run_ids": doc["constrained_runs"]}
    return doc


def _describe_missing(missing: list[dict[str, str]], total: int) -> str:
    states: dict[str, int] = {}
    for m in missing:
        states[m["state"]] = states.get(m["state"], 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return f"{len(missing)} of {total} runs are not finished ({counts})"


def _results_fits_report(study: StudySpec, *, missing: list[dict[str, str]], report: bool,
                         out: str | Path | None, log: Callable[[str], None], progress: Progress | None
                         ) -> tuple[dict[str, Any], dict[str, Path]]:
    """results.csv, fits.json (printing the laws) and, with `report`, the report file; (fits, paths)."""
    from clipscale.io import atomic_write_bytes, atomic_write_json
    from clipscale.study.results import build_results_table, table_bytes

    df = build_results_table(study)
    paths = {"results": study.output_dir / "results.csv", "fits": study.output_dir / "fits.json"}
    atomic_write_bytes(paths["results"], table_bytes(df, "csv"))
    doc = fit_stage(study, df, missing=missing, progress=progress)
    atomic_write_json(paths["fits"], doc)
    from clipscale.study.demo import summarize  # what `clipscale demo` prints: laws, isoFLOP, constrained

    for line in summarize(doc, primary=study.fit.metrics[0]):
        log(line)
    if report:
        from clipscale.report import write_report

        paths["report"] = write_report(study, out=out, fits=doc, table=df)
    return doc, paths


def finish_study(study: StudySpec, *, report: bool = True, require_complete: bool = True,
                 out: str | Path | None = None, log: Callable[[str], None] = print,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Results table → fits.json → report.html. With `require_complete`, nothing is written while runs are
    missing (a study that stopped early must not leave a report that looks final). `log` gets the summary
    printed at the end; `progress` the fitting stage's progress lines (`fit_stage`)."""
    from clipscale.study.grid import plan

    missing = missing_runs(study)
    total = len(plan(study))
    if missing and require_complete:
        log(f"study {study.name}: no fits or report yet: {_describe_missing(missing, total)}; rerun "
            f"`clipscale run {study.path}` (--retry-failed for failed runs), or `clipscale report "
            f"{study.path}` for an incomplete report")
        return {"complete": False, "missing": missing}
    from clipscale.report.build import rebuilding

    report_path = Path(out) if out else study.output_dir / "report.html"
    again = f"clipscale report {study.path}" + (f" --out {out}" if out else "")
    # from here a failure must not leave the old report looking current; Ctrl-C leaves it in place
    with rebuilding(report_path, again=again) if report else contextlib.nullcontext():
        doc, paths = _results_fits_report(study, missing=missing, report=report, out=out, log=log,
                                          progress=progress)
    if missing:
        log(f"study {study.name}: incomplete: {_describe_missing(missing, total)}")
    for kind, path in paths.items():
        log(f"{kind}: {path}")
    return {"complete": not missing, "missing": missing, "doc": doc, **paths}
