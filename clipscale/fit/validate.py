"""Out-of-sample checks of a law: a held-out set of rows, and leave-one-run-out.

Errors are reported in the target's units (`summarize`): accuracy points for errors in (0, 1], loss
units and relative % for a loss. Non-linear refits
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


def summarize(err: np.ndarray, y: np.ndarray | None = None, loss: bool = False) -> dict[str, Any]:
    """MAE in the target's units. An error in (0, 1] (1 − accuracy with --error): `mae` and, x100, accuracy
    points (`mae_pct`, `max_abs_err_pct`, `errors_pct`). A loss (nats, say): `mae` and `max_abs_err` in
    loss units and the error relative to the observed loss in % (`mae_rel_pct`, `max_rel_err_pct`); no
    "points", which mean nothing for a loss."""
    a = np.abs(err)
    out: dict[str, Any] = {"n": int(a.size), "units": "loss" if loss else "points", "mae": float(a.mean())}
    if loss:
        rel = 100 * a / np.abs(y)
        out.update(
            max_abs_err=float(a.max()),
            mae_rel_pct=float(rel.mean()),
            max_rel_err_pct=float(rel.max()),
            errors=err.tolist(),
        )
    else:
        out.update(
            mae_pct=float(100 * a.mean()),
            max_abs_err_pct=float(100 * a.max()),
            errors_pct=(100 * err).tolist(),
        )
    return out


def holdout(prep: Prepared, mask: np.ndarray, *, delta: float, full: Optimum | None = None) -> dict[str, Any]:
    """Fit on rows where `mask` is False, report the error on rows where it is True."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ClipscaleError("--holdout selected no rows")
    train = prep.subset(~mask)
    if train.n < prep.n_free:
        raise ClipscaleError(
            f"--holdout leaves {train.n} rows to fit, fewer than the "
            f"{prep.n_free} free parameters of {prep.law.name!r}"
        )
    opt = fit_prepared(train, delta=delta, starts=_starts(train, full, delta))
    err = _errors(prep, opt.params, mask)
    out = summarize(err, prep.y[mask], prep.loss)
    out["params"] = opt.params
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
        if train.n < prep.n_free:
            raise ClipscaleError(f"leave-one-run-out: {train.n} points left, fewer than the parameters")
        opt = fit_prepared(train, delta=delta, starts=_starts(train, full, delta))
        err[held] = _errors(prep, opt.params, held)
    return summarize(err, prep.y, prep.loss)
