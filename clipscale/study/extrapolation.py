"""Does a study's law predict its largest run? Refit without the largest compute group, predict it.

The largest compute group of a fit's rows (one distribution, one target, the runs the law was fitted
to, i.e. without data-constrained runs) is defined on a per-run budget: the isoFLOP level
`compute_group` for runs of a `compute = [...]` block, else the run's own compute C (a
`samples_seen = [...]` block). It is every run whose budget lies within GROUP_DEX (0.05 dex, 12 %; the
gap `clipscale isoflop` uses to separate budgets) of the largest budget: for an isoFLOP grid the runs
of the top budget, for a samples-seen grid the run(s) of largest compute (the largest model at the most
samples), and a mixed grid's runs near the top budget join it.

The law is refitted on the other runs (same law, frontier, link, fixed parameters and bootstrap as the
fit itself) and predicts the group's error at each run's own inputs. A law fitted to a frontier (law
`frontier`, or `[fit] frontier`) describes the best error at a compute, so the group's measured error
is its best run's; any other law describes every run, so the measured error is the geometric mean over
the group's runs, against the geometric mean of the predictions.

The interval is a 95 % *prediction* interval: the refit's bootstrap predictions (the uncertainty of the
law) plus the refit's own log residuals resampled (the scatter of a single run, or a mean of k runs,
around the law); why, with the coverage measured both ways, is in docs/scaling-laws.md ("Does the law
predict the largest run?"). The bootstrap-only interval of the mean law is kept as `mean_ci`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from clipscale.errors import error_line

GROUP_DEX = 0.05  # budgets within this many dex of the largest form the largest compute group
LEVEL = 0.95
MIN_EXTRA_POINTS = 2  # runs left for the refit beyond the law's free parameters


def largest_group(rows: Any) -> np.ndarray:
    """Mask of the largest compute group (module docstring): budget = compute_group, else compute."""
    budget = rows.compute_group.astype(float).fillna(rows.compute.astype(float)).to_numpy(float)
    top = np.log10(np.nanmax(budget))
    return np.log10(budget) >= top - GROUP_DEX


def _unavailable(reason: str) -> dict[str, Any]:
    return {"extrapolation_check": None, "extrapolation_check_reason": reason}


def check_largest(rows: Any, *, inputs: dict[str, str], n_params: int, on_frontier: bool,
                  refit: Callable[[Any], Any], seed: int = 0) -> dict[str, Any]:
    """`{"extrapolation_check": {...}}`, else `{"extrapolation_check": None, "extrapolation_check_reason"}`.

    `rows`: the fit's rows (columns compute, compute_group, error, run_id and those `inputs` name, e.g.
    {"C": "compute"}); `refit(rows) -> FitResult` fits the same law to fewer rows.
    """
    if rows.empty:
        return _unavailable("no rows")
    mask = largest_group(rows)
    held, group = rows[~mask], rows[mask]
    need = n_params + MIN_EXTRA_POINTS
    if held.run_id.nunique() < need:
        return _unavailable(f"too few runs below the largest compute group: {held.run_id.nunique()} "
                            f"(the law has {n_params} free parameters; the refit needs {need})")
    try:
        result = refit(held)
    except Exception as exc:  # too few frontier points, no convergence: the check says why
        return _unavailable(f"the refit without the largest compute group failed: {error_line(exc)}")
    runs = [str(r) for r in group.run_id]
    if on_frontier:
        group = group.loc[[group.error.idxmin()]]
    x = {k: group[c].to_numpy(float) for k, c in inputs.items()}
    measured = float(np.exp(np.mean(np.log(group.error.to_numpy(float)))))
    predicted = float(np.exp(np.mean(np.log(result.predict(**x)))))
    budget = group.compute_group.astype(float).fillna(group.compute.astype(float))
    check: dict[str, Any] = {
        "group_compute": float(budget.max()), "compute": [float(c) for c in group.compute],
        "runs": runs, "measured_runs": [str(r) for r in group.run_id], "measured": measured,
        "predicted": predicted,
        "n_points": int(result.n_points), "n_runs": int(held.run_id.nunique()),
        "interval": "prediction", "level": LEVEL}
    samples = result.predict_samples(**x) if result.bootstrap_params else np.empty((0, len(group)))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.mean(np.log(samples), axis=1) if samples.size else np.empty(0)
    boot = boot[np.isfinite(boot)]
    if boot.size < 2:
        why = (getattr(result, "ci_unavailable", None)
               or "no bootstrap refits ([fit] bootstrap = 0 or every refit failed)")
        check.update(ci_low=None, ci_high=None, mean_ci=None, verdict=None, reason=f"{why}: no interval")
        return {"extrapolation_check": check}
    resid = _log_residuals(result, held, inputs, on_frontier)
    lo, hi = 50 * (1 - LEVEL), 50 * (1 + LEVEL)
    rng = np.random.default_rng(seed)
    k = len(group)  # the measured value is a mean of k runs' log errors
    noise = rng.choice(resid, size=(boot.size, k)).mean(axis=1) if resid.size else np.zeros(boot.size)
    pi = np.exp(np.percentile(boot + noise, [lo, hi]))
    check.update(ci_low=float(pi[0]), ci_high=float(pi[1]),
                 mean_ci=[float(v) for v in np.exp(np.percentile(boot, [lo, hi]))],
                 residual_sd_log=float(np.std(resid)) if resid.size else 0.0,
                 verdict="held" if pi[0] <= measured <= pi[1] else "missed")
    return {"extrapolation_check": check}


def _log_residuals(result: Any, rows: Any, inputs: dict[str, str], on_frontier: bool) -> np.ndarray:
    """log(measured / law) of the points the refit went through (its frontier's, if it took one)."""
    if on_frontier and result.frontier_points.get("C"):
        c = np.asarray(result.frontier_points["C"], float)
        y = np.asarray(result.frontier_points["y"], float)
        return np.log(y) - np.log(result.predict(C=c))
    x = {k: rows[c].to_numpy(float) for k, c in inputs.items()}
    return np.log(rows.error.to_numpy(float)) - np.log(result.predict(**x))


def describe(entry: dict[str, Any]) -> str | None:
    """One text line on a fit entry's check, or None when the study turned it off."""
    if "extrapolation_check" not in entry:
        return None
    c = entry["extrapolation_check"]
    head = f"extrapolation check {entry['group']}"
    if c is None:
        return f"{head}: not made ({entry.get('extrapolation_check_reason', 'unavailable')})"
    what = (f"largest compute group C = {c['group_compute']:.4g} ({len(c['runs'])} run(s)), refit on "
            f"{c['n_runs']} runs below it")
    if c.get("verdict") is None:
        return f"{head}: {what}: measured {c['measured']:.4g}, predicted {c['predicted']:.4g}; {c['reason']}"
    return (f"{head}: {what}: measured error {c['measured']:.4g}, predicted {c['predicted']:.4g} "
            f"(95% prediction interval [{c['ci_low']:.4g}, {c['ci_high']:.4g}]): {c['verdict']}")
