"""Estimating one law on one set of points.

Lines (`power`, `frontier`) are closed-form least squares in log10-log10 space (with `--objective
squares`, scipy's least_squares on E from there). Non-linear laws minimise `--objective`
(fit.estimation.objective; by default the Huber loss of natural-log residuals, Hoffmann et al. 2022
approach 3 as re-done by Besiroglu et al. 2024), with scipy's L-BFGS-B and an analytic gradient, from the best
`max_starts` points of a grid of starts (the whole grid is screened in one vectorised pass). The
objective is divided by a scale (delta) inside the optimiser only, so its scale is ~ the number of points and
L-BFGS-B's tolerances mean the same for every delta (a too-small loss scale is what stopped
Hoffmann et al.'s optimiser early). Points carry integer weights so a bootstrap resample is a
re-weighting, not a copy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares, minimize

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation import objective as objectives
from clipscale.fit.estimation._blas import single_threaded_blas
from clipscale.fit.estimation.bounds import bounds_array, params_at_bound, uncentred_grid
from clipscale.fit.estimation.link import IDENTITY
from clipscale.fit.estimation.points import Prepared, frontier_subset
from clipscale.fit.laws import logsumexp, lse_and_jacobian

AT_BEST_RTOL = 1e-5


@dataclass
class Optimum:
    params: dict[str, float]
    theta: np.ndarray | None
    objective: float
    n_starts: int
    n_starts_at_best: int
    converged: bool
    fitted: Prepared | None = None  # the frontier points the law was fitted to (None: all points)
    at_bound: dict[str, str] = field(default_factory=dict)  # free parameters at a bound -> why
    notes: list[str] = field(default_factory=list)  # e.g. a lower minimum than the published estimator's
    residuals: np.ndarray | None = None  # per point, of a fully fixed parameter set (score_fixed)


# ------------------------------------------------------------------------------------ lines
def fit_line(prep: Prepared, weights: np.ndarray | None = None) -> Optimum:
    """Weighted least squares of log10 E on log10 C (weights are bootstrap counts); `A` or `alpha` may
    be fixed, leaving a one-parameter least-squares problem."""
    x, ly = np.log10(prep.raw["C"]), np.log10(prep.y)
    w = np.ones_like(x) if weights is None else weights
    keep = w > 0
    x, ly, w = x[keep], ly[keep], w[keep]
    if "alpha" in prep.fix:
        slope = prep.fix["alpha"]
        icpt = float(np.sum(w * (ly - slope * x)) / np.sum(w))
    elif "A" in prep.fix:
        icpt = float(np.log10(prep.fix["A"]))
        slope = float(np.sum(w * x * (ly - icpt)) / np.sum(w * x * x))
    else:
        if np.unique(x).size < 2:
            raise ClipscaleError("a power law needs points at two or more distinct values of C")
        sw = np.sqrt(w)
        design = np.stack([x, np.ones(x.size)], axis=1) * sw[:, None]
        (slope, icpt), *_ = np.linalg.lstsq(design, ly * sw, rcond=None)
    if prep.objective == "squares":
        icpt, slope = _line_on_target(prep, x, ly, w, float(icpt), float(slope))
        res = 10.0 ** ly - 10.0 ** (slope * x + icpt)
    else:
        res = ly - (slope * x + icpt)
    return Optimum({"A": float(10**icpt), "alpha": float(slope)}, None, float(np.sum(w * res**2)), 1, 1, True)


def _line_on_target(
    prep: Prepared, x: np.ndarray, ly: np.ndarray, w: np.ndarray, icpt: float, slope: float
) -> tuple[float, float]:
    """Least squares of y - A·C^alpha on y itself (what curve_fit does), started from the log-space line;
    a fixed A or alpha stays fixed. x, ly: log10 C and log10 y of the points with weight > 0."""
    y, sw = 10.0**ly, np.sqrt(w)
    free = [k for k in ("icpt", "slope") if {"icpt": "A", "slope": "alpha"}[k] not in prep.fix]
    start = {"icpt": icpt, "slope": slope}

    def resid(v: np.ndarray) -> np.ndarray:
        p = {**start, **dict(zip(free, v, strict=True))}
        return sw * (y - 10.0 ** (p["slope"] * x + p["icpt"]))

    fit = least_squares(resid, [start[k] for k in free], method="lm" if len(x) > len(free) else "trf",
                        xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=10000)
    out = {**start, **dict(zip(free, fit.x, strict=True))}
    return float(out["icpt"]), float(out["slope"])


# ------------------------------------------------------------------------------------ non-linear
def loss_objective(
    theta: np.ndarray, prep: Prepared, delta: float, w: np.ndarray
) -> tuple[float, np.ndarray]:
    """Sum of w * loss(residual) / scale for `prep.objective` (clipscale.fit.estimation.objective) and its
    gradient in theta."""
    design = prep.design
    if design is None:
        logp, jac = lse_and_jacobian(prep.law, theta, prep.logx, prep.raw, prep.centre)
    else:  # fast path (bootstrap refits): terms = design @ theta, no per-call Jacobian build
        t = (design @ theta).reshape(prep.n, -1)
        top = t.max(axis=1, keepdims=True)
        e = np.exp(t - top)
        s = e.sum(axis=1, keepdims=True)
        logp, soft = (top + np.log(s))[:, 0], e / s
    r, dr = objectives.residuals(prep.objective, prep.y, prep.log_y, logp)
    h, psi = objectives.rho(prep.objective, r, delta)
    g = w * psi * dr
    grad = jac.T @ g if design is None else (soft * g[:, None]).reshape(-1) @ design
    sc = objectives.scale(prep.objective, prep.y, delta)
    return float(np.dot(w, h)) / sc, grad / sc


huber_objective = loss_objective  # the default objective's name, kept for callers of the Huber era


def grid_starts(prep: Prepared, delta: float, max_starts: int) -> np.ndarray:
    """The `max_starts` best points of the law's grid by objective, screened in one batch, plus the
    max_starts // 8 best of each region of its `extra_grid` (points the main grid's best crowd out)."""
    starts = _best_of(prep, prep.law.grid(prep.log_y), delta, max_starts)
    n_extra = max_starts // 8
    if prep.law.extra_grid is None or n_extra == 0:
        return starts
    regions = [_best_of(prep, axes, delta, n_extra) for axes in prep.law.extra_grid(prep.log_y)]
    return np.vstack([starts, *regions])


def _best_of(prep: Prepared, axes: list[np.ndarray], delta: float, k: int) -> np.ndarray:
    grid = np.array(list(itertools.product(*axes)))
    if prep.fixed:  # the grid is written for centred inputs: move it to uncentred, then fix
        grid = uncentred_grid(prep, grid)
    lo, hi = bounds_array(prep)
    grid = np.unique(np.clip(grid, lo, hi), axis=0)
    obj = np.concatenate([_grid_objective(prep, g, delta) for g in _grid_chunks(prep, grid)])
    order = np.argsort(obj, kind="stable")
    return grid[order[:k]]


GRID_CELLS = 2**21  # points × terms × grid rows per chunk: ~16 MB per float64 temporary, ~0.2 GB in all


def _grid_chunks(prep: Prepared, grid: np.ndarray) -> list[np.ndarray]:
    """The grid in chunks whose (grid rows × points × terms) arrays hold at most GRID_CELLS values, so
    screening the starts takes bounded memory however many rows are fitted (one row per chunk at most)."""
    n_terms = prep.design.shape[0] // prep.n if prep.design is not None else 4
    rows = max(1, GRID_CELLS // max(1, prep.n * n_terms))
    return np.array_split(grid, -(-grid.shape[0] // rows))


def _grid_objective(prep: Prepared, grid: np.ndarray, delta: float) -> np.ndarray:
    """The objective (unweighted, unscaled) of each row of `grid` (g, p)."""
    if prep.design is None:
        logp = logsumexp(prep.law.terms(grid, prep.logx, prep.raw, prep.centre))  # (g, n)
    else:  # linear terms: one matrix product, (n*m, p) @ (p, g)
        with single_threaded_blas():
            t = (prep.design @ grid.T).reshape(prep.n, -1, grid.shape[0])  # (n, m, g)
        top = t.max(axis=1)
        logp = (top + np.log(np.exp(t - top[:, None, :]).sum(axis=1))).T
    r, _ = objectives.residuals(prep.objective, prep.y[None, :], prep.log_y[None, :], logp)
    return objectives.rho(prep.objective, r, delta)[0].sum(axis=1)


def fit_lse(
    prep: Prepared,
    *,
    delta: float,
    weights: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    max_starts: int = 32,
) -> Optimum:
    """L-BFGS-B from each start; keeps the best; counts starts within AT_BEST_RTOL of it. A search from
    scratch on a law with a published estimator that applies (`Law.protocol`) returns that estimator's
    answer instead, checked against this search (`published_optimum`)."""
    published = prep.law.protocol is not None and prep.objective == objectives.DEFAULT_OBJECTIVE
    if starts is None and weights is None and published:
        theta = prep.law.protocol(prep, delta)
        if theta is not None:
            return published_optimum(prep, theta, delta=delta, max_starts=max_starts)
    w = np.ones(prep.n) if weights is None else np.asarray(weights, float)
    if starts is None:
        starts = grid_starts(prep, delta, max_starts)
    results = []
    lo, hi = bounds_array(prep)
    bounds = list(zip(lo, hi, strict=True))
    with single_threaded_blas():
        for th0 in np.atleast_2d(starts):
            th0 = np.clip(th0, lo, hi)
            res = minimize(
                loss_objective,
                th0,
                args=(prep, delta, w),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
            )
            if np.isfinite(res.fun):
                results.append(res)
    if not results:
        raise ClipscaleError(f"the {prep.law.name} fit did not converge: every start gave a non-finite loss")
    funs = np.array([r.fun for r in results])
    best = results[int(np.argmin(funs))]
    at_best = int(np.sum(funs <= best.fun * (1 + AT_BEST_RTOL) + 1e-12))
    converged = bool(best.success or at_best >= 2 or np.max(np.abs(best.jac)) < 1e-4 * max(1.0, w.sum()))
    params = prep.law.to_params(best.x, prep.centre)
    if not all(np.isfinite(v) for v in params.values()):
        raise ClipscaleError(f"the {prep.law.name} fit did not converge: non-finite parameters {params}")
    params.update(prep.fix)  # exactly the values given, not their round trip through logs
    return Optimum(
        params,
        best.x,
        float(best.fun) * objectives.scale(prep.objective, prep.y, delta),
        len(results),
        at_best,
        converged,
        at_bound=params_at_bound(prep, best.x),
    )


FLAT_RTOL = 0.01  # a minimum elsewhere within 1 % of the objective: the data do not choose between them


def published_optimum(prep: Prepared, theta: np.ndarray, *, delta: float, max_starts: int = 32) -> Optimum:
    """The published estimator's point, kept as it is (so the published numbers are what it reproduces),
    with the objective in this module's units (sum of Huber losses), and checked against our own search
    from the law's grid: a lower minimum whose free parameters differ by > 1 % is reported in `notes`."""
    sc = objectives.scale(prep.objective, prep.y, delta)
    obj = loss_objective(theta, prep, delta, np.ones(prep.n))[0] * sc
    params = prep.law.to_params(theta, prep.centre)
    params.update(prep.fix)
    search = fit_lse(prep, delta=delta, starts=grid_starts(prep, delta, max_starts))
    notes = []
    free = [k for k in prep.law.params if k not in prep.fix]
    moved = [k for k in free if abs(search.params[k] - params[k]) > 0.01 * abs(params[k])]
    if search.objective < obj * (1 - AT_BEST_RTOL) and moved:
        drop = 100 * (1 - search.objective / obj)
        where = ", ".join(f"{k}={search.params[k]:.4g}" for k in free)
        flat = "weakly determined" if drop < 100 * FLAT_RTOL else "not at the best minimum"
        notes.append(
            f"the published estimator ends at a local minimum; a search from the law's grid finds {where} "
            f"with objective {search.objective:.7g} ({drop:.2f}% lower): {', '.join(moved)} {flat} "
            "by these points"
        )
    return Optimum(
        params, theta, obj, search.n_starts + 1, 1, True, at_bound=params_at_bound(prep, theta), notes=notes
    )


def fit_prepared(
    prep: Prepared,
    *,
    delta: float,
    weights: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    max_starts: int = 32,
) -> Optimum:
    """Take the frontier (of the points with weight > 0) if one is asked for, then fit the law to it;
    dispatch on the law's kind. A frontier's points are fitted unweighted: a minimum does not count."""
    if prep.frontier != "none":
        sub = frontier_subset(prep, weights)
        opt = fit_prepared(sub, delta=delta, starts=starts, max_starts=max_starts)
        opt.fitted = sub
        return opt
    if prep.n_free == 0:
        return score_fixed(prep, delta=delta, weights=weights)
    if prep.law.kind in ("loglinear", "frontier"):
        return fit_line(prep, weights)
    return fit_lse(prep, delta=delta, weights=weights, starts=starts, max_starts=max_starts)


def score_fixed(prep: Prepared, *, delta: float, weights: np.ndarray | None = None) -> Optimum:
    """Every parameter fixed (--fix all): nothing is optimised; the objective of that point (in the units
    the law's estimator reports: fit_line's squared log10 residuals for lines), and its residuals."""
    params = dict(prep.fix)
    w = np.ones(prep.n) if weights is None else np.asarray(weights, float)
    logp = prep.law.log_predict(params, prep.raw)
    if prep.law.kind in ("loglinear", "frontier"):
        res = prep.y - np.exp(logp) if prep.objective == "squares" else (prep.log_y - logp) / np.log(10)
        obj = float(np.sum(w * res**2))
        theta = None
    else:
        res, _ = objectives.residuals(prep.objective, prep.y, prep.log_y, logp)
        obj = float(np.dot(w, objectives.rho(prep.objective, res, delta)[0]))
        theta = prep.law.from_params(params, prep.centre)
    return Optimum(params, theta, obj, 0, 0, True, notes=["every parameter fixed: scored, not fitted"],
                   residuals=res)


def r2_log(prep: Prepared, opt: Optimum) -> float:
    """R^2 of log E, on the points the law was fitted to (a frontier's points when there is one)."""
    pts = opt.fitted or prep
    if pts.link == IDENTITY:
        return _r2(np.log(pts.y), pts.law.log_predict(opt.params, pts.raw))
    return _r2(np.log(pts.error), np.log(pts.to_error(pts.law.predict(opt.params, pts.raw))))


def r2_target(prep: Prepared, opt: Optimum) -> float:
    """R^2 of E itself (e.g. of the loss) on the points the law was fitted to."""
    pts = opt.fitted or prep
    return _r2(pts.error, pts.to_error(pts.law.predict(opt.params, pts.raw)))


def _r2(obs: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((obs - obs.mean()) ** 2))
    return 1.0 - float(np.sum((obs - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
