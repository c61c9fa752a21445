"""Results tables in, fitted laws out: what `clipscale fit` does, as a library function.

Column options are a column name or a safe expression over columns (clipscale.fit.expr: parsed and
checked, never eval'd; backticks for names with spaces), so
`--D "\\`Training FLOP\\` / (6 * \\`Model Size\\`)"` works on anyone's table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError
from clipscale.fit.analyses.frontier import check_frontier, check_frontier_bins
from clipscale.fit.estimation.link import parse_link
from clipscale.fit.estimation.objective import DEFAULT_OBJECTIVE, check_objective
from clipscale.fit.estimation.points import prepare
from clipscale.fit.estimation.validate import validate_fit
from clipscale.fit.laws import Law, get_law
from clipscale.fit.result import FitResult, fit_law
from clipscale.fit.rows import check_key_column, column, filter_rows, row_mask
from clipscale.progress import Progress, prefixed


def fit_table(df: pd.DataFrame, *, law: str, y: str, **options: Any) -> dict[str, Any]:
    """Fit `law` per group of `by` (or once); returns the `clipscale fit --json` document. The options
    are those of `fit_table_results`."""
    return fit_table_results(df, law=law, y=y, **options)[0]


def fit_table_results(
    df: pd.DataFrame,
    *,
    law: str,
    y: str,
    C: str | None = None,
    N: str | None = None,
    D: str | None = None,
    U: str | None = None,
    S: str | None = None,
    by: str | None = None,
    where: str | None = None,
    error: bool = False,
    bootstrap: int = 0,
    holdout: str | None = None,
    loo: bool = False,
    seed: int = 0,
    run: str | None = None,
    huber_delta: float = 1e-3,
    loss: bool = False,
    frontier: str = "none",
    fix: dict[str, float] | None = None,
    link: str | float | None = "error",
    objective: str = DEFAULT_OBJECTIVE,
    frontier_bins: int | None = None,
    fit_where: str | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[tuple[Any, FitResult, pd.DataFrame]]]:
    """The one grouped-fitting function (CLI, studies, report): fit `law` per group of `by` (or once) and
    return the `clipscale fit --json` document and (group, FitResult, rows) per group, the latter what
    `clipscale.fit.result.save_fits` writes. Column options are names or expressions over the columns.

    `run` names a column identifying training runs (bootstrap resamples runs, `loo` leaves runs out);
    without it every row is its own run. `holdout` is a boolean expression for held-out rows.
    `frontier` (none, cherti, pareto, hull) picks the points the law is fitted to, over the compute `C`;
    `fix` holds parameters at given values; `link` is the scale the law is fitted on (fit.estimation.link;
    `auto` is chosen again inside every validation fold). Validation errors are in the target's units:
    accuracy points with `error` (and for errors in (0, 1]), loss units and relative % with `loss`.
    `objective` is what every fit and refit minimises (huber-log, squares-log, squares); `frontier_bins`
    the bin edges of a pareto / cherti frontier; `fit_where` a boolean expression applied after the
    frontier is taken (`where` is applied before it). `progress` (clipscale.progress) gets a line as each
    group's fit starts when it bootstraps or validates, then that work's rate-limited done/total lines.
    """
    spec = get_law(law)
    exprs = {"C": C, "N": N, "D": D, "U": U, "S": S}
    _check_options(spec, exprs, frontier=frontier, link=link)
    check_objective(objective)
    check_frontier_bins(frontier, frontier_bins)
    df = filter_rows(df, where)
    _check_columns(df, by=by, run=run)
    for option, expr in (("holdout", holdout), ("fit-where", fit_where)):
        if expr:  # a bad expression is one line before any progress line, not after the first group starts
            row_mask(df, expr, option)
    groups = [(None, df)] if by is None else [(k, g) for k, g in df.groupby(by, sort=True)]
    opts = {
        "law": spec.name,
        "exprs": exprs,
        "y": y,
        "error": error,
        "bootstrap": bootstrap,
        "holdout": holdout,
        "loo": loo,
        "run": run,
        "delta": huber_delta,
        "loss": loss,
        "frontier": frontier,
        "fix": fix or {},
        "link": link,
        "objective": objective,
        "frontier_bins": frontier_bins,
        "fit_where": fit_where,
    }
    fits, results = [], []
    for i, (key, g) in enumerate(groups):  # seed + i: groups resample independently (exponent_differences)
        say = _group_progress(progress, key, i, len(groups), rows=len(g), **opts)
        try:
            entry, result = _fit_group(g, seed=seed + i, progress=say, **opts)
        except ClipscaleError as exc:
            if key is None:
                raise
            raise ClipscaleError(f"--by {by!r} group {_plain(key)!r}: {exc}") from None
        fits.append({"group": None if key is None else _plain(key), **entry})
        results.append((fits[-1]["group"], result, g))
    head = {"law": law, "formula": spec.formula, "frontier": results[0][1].frontier if results else frontier,
            "fixed": dict(fix or {}), "y": y, "error": error, "loss": loss, "by": by, "where": where,
            "objective_kind": objective, "frontier_bins": frontier_bins, "fit_where": fit_where}
    return _document(spec, head, fits, results, bootstrap=bootstrap), results


def _group_progress(progress: Progress | None, key: Any, i: int, n: int, *, rows: int, law: str,
                    frontier: str, bootstrap: int, loo: bool, holdout: str | None,
                    **_: Any) -> Progress | None:
    """Say that a group's fit starts (`fit uniform (1/2): 12 rows, law power, frontier cherti, bootstrap
    1000`) when it does more than one fit; returns `progress` prefixed with the group for its lines."""
    label = "fit" if key is None else f"fit {_plain(key)}"
    if progress is not None and (bootstrap or loo or holdout):
        work = [f"{rows} rows", f"law {law}"]
        if frontier != "none":
            work.append(f"frontier {frontier}")
        if bootstrap:
            work.append(f"bootstrap {bootstrap}")
        if loo:
            work.append("leave-one-run-out")
        if holdout:
            work.append("holdout")
        progress(f"{label}{f' ({i + 1}/{n})' if n > 1 else ''}: {', '.join(work)}")
    return prefixed(progress, f"{label}: ")


def _document(spec: Law, head: dict[str, Any], fits: list[dict[str, Any]],
              results: list[tuple[Any, FitResult, pd.DataFrame]], *, bootstrap: int) -> dict[str, Any]:
    """The `clipscale fit --json` document: the fits, and with --by their comparison (and, with a
    bootstrap, the CIs of their exponents' differences)."""
    doc: dict[str, Any] = {**head, "fits": fits}
    if head["by"] is not None:
        doc["comparison"] = {p: {str(f["group"]): f["params"][p] for f in fits} for p in spec.params}
        if bootstrap:
            doc["differences"] = exponent_differences([(g, r) for g, r, _ in results])
    return doc


def _check_options(
    spec: Law, exprs: dict[str, str | None], *, frontier: str, link: str | float | None
) -> None:
    parse_link(link)
    check_frontier(frontier)
    for key in spec.inputs:
        if exprs[key] is None:
            raise ClipscaleError(f"law {spec.name!r} ({spec.formula}) needs --{key}")
    if frontier != "none" and exprs["C"] is None:
        raise ClipscaleError(f"--frontier {frontier} needs --C: the compute the frontier is taken over")


def _check_columns(df: pd.DataFrame, *, by: str | None, run: str | None) -> None:
    for option, name in (("--by", by), ("--run", run)):
        if name is not None:
            check_key_column(df, name, option)


def exponent_differences(fits: list[tuple[Any, FitResult]], level: float = 0.95) -> list[dict[str, Any]]:
    """Every pair of groups, every exponent (the lower-case parameters): the difference with a percentile
    CI. Groups are resampled independently, so pairing their i-th bootstrap refits draws the difference.
    `excludes_zero` answers "does one group scale differently from the other?" at that level. Groups
    whose laws are of different scales (`--link auto` chose differently) have no comparable exponents and
    are left out."""
    out = []
    for i, (ga, fa) in enumerate(fits):
        for gb, fb in fits[i + 1 :]:
            if fa.link != fb.link:
                continue
            a, b = np.asarray(fa.bootstrap_params), np.asarray(fb.bootstrap_params)
            k = min(len(a), len(b))
            if k == 0:
                continue
            law = get_law(fa.law)
            for j, name in enumerate(law.params):
                if not name.islower() or name in fa.fixed or name in fb.fixed:
                    continue
                d = a[:k, j] - b[:k, j]
                lo, hi = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
                out.append(
                    {
                        "param": name,
                        "groups": [ga, gb],
                        "difference": fa.params[name] - fb.params[name],
                        "ci": [float(lo), float(hi)],
                        "excludes_zero": bool(lo > 0 or hi < 0),
                    }
                )
    return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _fit_group(
    g: pd.DataFrame,
    *,
    law: str,
    exprs: dict[str, str | None],
    y: str,
    error: bool,
    bootstrap: int,
    holdout: str | None,
    loo: bool,
    seed: int,
    run: str | None,
    delta: float,
    loss: bool,
    frontier: str,
    fix: dict[str, float],
    link: str | float | None,
    objective: str,
    frontier_bins: int | None,
    fit_where: str | None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], FitResult]:
    spec = get_law(law)
    if fit_where and frontier == "none":  # no frontier to take first: --fit-where is one more filter
        g = g[row_mask(g, fit_where, "fit-where")]
        if g.empty:
            raise ClipscaleError(f"--fit-where {fit_where!r} keeps no rows")
        fit_where = None
    yv = column(g, y, "y")
    if error:
        yv = 1.0 - yv
    wanted = set(spec.inputs) | ({"C"} if frontier != "none" else set())
    inputs = {k: column(g, e, k) for k, e in exprs.items() if e is not None and k in wanted}
    labels = {k: f"--{k} {e!r}" for k, e in exprs.items() if e is not None}
    labels["y"] = f"--y {y!r}" + (" (as 1 - y)" if error else "")
    groups = g[run].to_numpy() if run else None
    where = {"objective": objective, "frontier_bins": frontier_bins}
    where["fit_mask"] = row_mask(g, fit_where, "fit-where") if fit_where else None
    result = fit_law(
        law,
        y=yv,
        groups=groups,
        bootstrap=bootstrap,
        seed=seed,
        huber_delta=delta,
        labels=labels,
        loss=loss,
        frontier=frontier,
        fix=fix,
        link=link,
        progress=progress,
        **where,
        **inputs,
    )
    if not error:
        rising = rising_warning(result, spec.inputs)
        if rising:
            result.warnings.append(rising)
    out = result.to_dict()
    out.pop("bootstrap_params")
    validation: dict[str, Any] = {}
    if holdout or loo:
        validation = validate_fit(
            prepare(spec, yv, inputs, labels, loss=loss, frontier=frontier, fix=fix, **where),
            delta=delta,
            link=link,
            holdout_mask=row_mask(g, holdout, "holdout") if holdout else None,
            loo=loo,
            groups=groups,
            progress=progress,
        )
        if holdout:
            validation["holdout"] = {"expr": holdout, **validation["holdout"]}
    out["validation"] = validation
    return out, result


def rising_warning(result: FitResult, inputs: tuple[str, ...]) -> str | None:
    """The warning for a law of an "error" that rises from the smallest to the largest inputs fitted (an
    exponent of the wrong sign): most likely an accuracy or recall fitted without --error. None where it
    falls or stays flat."""
    keys = [k for k in inputs if k in result.input_ranges]
    if not keys:
        return None
    low, high = ({k: [result.input_ranges[k][i]] for k in keys} for i in (0, 1))
    e_low, e_high = float(result.predict(**low)[0]), float(result.predict(**high)[0])
    if not e_high > e_low:
        return None
    return (f"y rises with {' and '.join(keys)}: if y is an accuracy or recall, add --error (the law goes "
            f"from {e_low:.4g} to {e_high:.4g} over the fitted range)")
