"""Bounds of the non-linear laws' internal parameters on prepared points: the lo = hi bounds of fixed
parameters, the grid of starts moved to the uncentred parametrisation (`uncentred_grid`), and which
parameters ended at a bound (`at_bound`).
"""

from __future__ import annotations

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation.points import Prepared
from clipscale.fit.laws.constraints import check_fix
from clipscale.fit.laws.registry import logsumexp


def uncentred_grid(prep: Prepared, grid: np.ndarray) -> np.ndarray:
    law, zero = prep.law, dict.fromkeys(prep.centre, 0.0)
    out = np.empty_like(grid)
    with np.errstate(all="ignore"):
        for i, th in enumerate(grid):
            out[i] = law.from_params({**law.to_params(th, prep.grid_centre), **prep.fix}, zero)
    out = out[np.all(np.isfinite(out), axis=1)]
    for i, v in prep.fixed.items():
        out[:, i] = v
    return out


def bounds_array(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the internal parameters, lo = hi = value for a fixed one."""
    lo, hi = (np.array(b, float) for b in zip(*prep.law.bounds, strict=True))
    for i, v in prep.fixed.items():
        lo[i] = hi[i] = v
    return lo, hi


AT_BOUND_RTOL = 1e-5


def params_at_bound(prep: Prepared, theta: np.ndarray) -> dict[str, str]:
    """Free parameters at or beyond a bound, public name -> why: within 1e-6 of a bound or past it (a
    published estimator's point is not bounded), or anywhere from which moving them to that bound changes
    no prediction by more than AT_BOUND_RTOL (relative), i.e. their term has vanished from every point
    and the optimiser stopped on a plateau (an E_inf of 1e-13 on errors of 0.3 is E_inf → 0). Also a
    value `--fix` would refuse (outside the range the law allows)."""
    out = {name: f"{side} bound" for name, side in bound_sides(prep, theta).items()}
    params = prep.law.to_params(theta, prep.centre)
    for i, name in enumerate(prep.law.params):
        if i in prep.fixed or not np.isfinite(params[name]):
            continue
        try:
            check_fix(prep.law, {name: params[name]})
        except ClipscaleError:
            why = f"{name} = {params[name]:.4g} is outside the range --fix accepts"
            out[name] = f"{out[name]}; {why}" if name in out else why
    return out


def bound_sides(prep: Prepared, theta: np.ndarray) -> dict[str, str]:
    """Public name -> "at the lower", "beyond the upper"... for free parameters at or past a bound."""

    def log_pred(th: np.ndarray) -> np.ndarray:
        return logsumexp(prep.law.terms(th, prep.logx, prep.raw, prep.centre))

    base = log_pred(theta)
    out = {}
    for i, (lo, hi) in enumerate(prep.law.bounds):
        if i in prep.fixed:
            continue
        for side, b in (("lower", lo), ("upper", hi)):
            tol = 1e-6 * (1 + abs(b))
            past = theta[i] < b - tol if side == "lower" else theta[i] > b + tol
            moved = theta.copy()
            moved[i] = b
            with np.errstate(all="ignore"):
                shift = np.max(np.abs(log_pred(moved) - base))
            if past or abs(theta[i] - b) <= tol or shift <= AT_BOUND_RTOL:
                out[prep.law.params[i]] = f"{'beyond' if past else 'at'} the {side}"
                break
    return out
