"""Out-of-sample checks of a law: a held-out set of rows, and leave-one-run-out.

Errors are reported as mean absolute error of E (and x100: points of accuracy). Non-linear refits
start from the full-data optimum plus the best few grid points, so a LOO over 29 runs costs
seconds, not minutes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.bootstrap import group_index
from clipscale.fit.estimate import Optimum, Prepared, fit_prepared, grid_starts

LOO_EXTRA_STARTS = 1


def _starts(prep: Prepared, full: Optimum | None, delta: float) -> np.ndarray | None:
    if prep.law.kind != "lse":
        return None
    extra = grid_starts(prep, delta, LOO_EXTRA_STARTS)
    return extra if full is None or full.theta is None else np.vstack([full.theta, extra])


def _errors(prep: Prepared, params: dict[str, float], mask: np.ndarray) -> np.ndarray:
    pred = prep.law.predict(params, {k: v[mask] for k, v in prep.raw.items()})
    return pred - prep.y[mask]


def summarize(err: np.ndarray) -> dict[str, Any]:
    a = np.abs(err)
    return {
        "n": int(a.size),
        "mae": float(a.mean()),
        "mae_pct": float(100 * a.mean()),
        "max_abs_err_pct": float(100 * a.max()),
    }


def holdout(prep: Prepared, mask: np.ndarray, *, delta: float, full: Optimum | None = None) -> dict[str, Any]:
    """Fit on rows where `mask` is False, report the error on rows where it is True."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ClipscaleError("--holdout selected no rows")
    train = prep.subset(~mask)
    if train.n < prep.law.n_params:
        raise ClipscaleError(
            f"--holdout leaves {train.n} rows to fit, fewer than the "
            f"{prep.law.n_params} parameters of {prep.law.name!r}"
        )
    opt = fit_prepared(train, delta=delta, starts=_starts(train, full, delta))
    err = _errors(prep, opt.params, mask)
    out = summarize(err)
    out["params"] = opt.params
    out["errors_pct"] = (100 * err).tolist()
    return out


def leave_one_run_out(
    prep: Prepared, *, delta: float, groups: np.ndarray | None = None, full: Optimum | None = None
) -> dict[str, Any]:
    """Refit without each run in turn and predict its points."""
    idx, n_groups = group_index(groups, prep.n)
    if n_groups < 2:
        raise ClipscaleError("leave-one-run-out needs at least two runs")
    err = np.empty(prep.n)
    for g in range(n_groups):
        held = idx == g
        train = prep.subset(~held)
        if train.n < prep.law.n_params:
            raise ClipscaleError(f"leave-one-run-out: {train.n} points left, fewer than the parameters")
        opt = fit_prepared(train, delta=delta, starts=_starts(train, full, delta))
        err[held] = _errors(prep, opt.params, held)
    out = summarize(err)
    out["errors_pct"] = (100 * err).tolist()
    return out
