"""Fixed parameters (`--fix`) and parameters at a bound (`at_bound`) of the non-linear laws.

With fixed parameters the inputs are not centred, so every internal parameter is a function of one
public parameter and fixing it is a bound lo = hi in L-BFGS-B; the law's grid of starts, written for
centred inputs, is moved to the uncentred parametrisation (`uncentred_grid`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.laws import Law, logsumexp

if TYPE_CHECKING:
    from clipscale.fit.points import Prepared


def check_fix(law: Law, fix: dict[str, float] | None) -> tuple[dict[str, float], dict[int, float]]:
    """Validate fixed parameters (public names of `law`); for non-linear laws also their internal values
    (uncentred, so each internal parameter depends on its public one only) checked against the bounds."""
    fix = dict(fix or {})
    for k, v in fix.items():
        if k not in law.params:
            raise ClipscaleError(
                f"--fix {k}: law {law.name!r} has no parameter {k}; its parameters are "
                f"{', '.join(law.params)}"
            )
        if not np.isfinite(v):
            raise ClipscaleError(f"--fix {k}={v}: expected a finite number")
    if len(fix) == law.n_params:
        raise ClipscaleError(f"--fix holds every parameter of {law.name!r} fixed: nothing is left to fit")
    if law.kind != "lse" or not fix:
        return fix, {}
    zero = dict.fromkeys(law.inputs, 0.0)
    try:
        with np.errstate(all="ignore"):
            theta = law.from_params({**dict.fromkeys(law.params, 1.0), **fix}, zero)
    except (ValueError, ZeroDivisionError):
        theta = np.full(len(law.params), np.nan)
    fixed = {}
    for k in fix:
        i = law.params.index(k)
        lo, hi = law.bounds[i]
        if not (np.isfinite(theta[i]) and lo <= theta[i] <= hi):
            raise ClipscaleError(f"--fix {k}={fix[k]}: outside the range law {law.name!r} allows for {k}")
        fixed[i] = float(theta[i])
    return fix, fixed


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
