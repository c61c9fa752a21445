"""Bounds of the non-linear laws' internal parameters on prepared points: the lo = hi bounds of fixed
parameters, the grid of starts moved to the uncentred parametrisation (`uncentred_grid`), and which
parameters ended at a bound (`at_bound`).
"""

from __future__ import annotations

import numpy as np

from clipscale.fit.estimation.points import Prepared
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


def params_at_bound(prep: Prepared, theta: np.ndarray) -> list[str]:
    """Public names of the free parameters that ended at a bound: within 1e-6 of it, or anywhere from
    which moving them to that bound changes no prediction by more than AT_BOUND_RTOL (relative), i.e.
    their term has vanished from every point and the optimiser stopped on a plateau (an E_inf of 1e-13
    on errors of 0.3 is E_inf → 0)."""

    def log_pred(th: np.ndarray) -> np.ndarray:
        return logsumexp(prep.law.terms(th, prep.logx, prep.raw, prep.centre))

    base = log_pred(theta)
    out = []
    for i, (lo, hi) in enumerate(prep.law.bounds):
        if i in prep.fixed:
            continue
        for b in (lo, hi):
            moved = theta.copy()
            moved[i] = b
            with np.errstate(all="ignore"):
                shift = np.max(np.abs(log_pred(moved) - base))
            if abs(theta[i] - b) <= 1e-6 * (1 + abs(b)) or shift <= AT_BOUND_RTOL:
                out.append(prep.law.params[i])
                break
    return out
