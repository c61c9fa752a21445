"""Estimating one law on one set of points.

Lines (`power`, `frontier`) are closed-form least squares in log10-log10 space. Non-linear laws
minimise the Huber loss of natural-log residuals, summed over points (Hoffmann et al. 2022 approach 3
as re-done by Besiroglu et al. 2024), with scipy's L-BFGS-B and an analytic gradient, from the best
`max_starts` points of a grid of starts (the whole grid is screened in one vectorised pass). The
objective is divided by delta inside the optimiser only, so its scale is ~ the number of points and
L-BFGS-B's tolerances mean the same for every delta (a too-small loss scale is what stopped
Hoffmann et al.'s optimiser early). Points carry integer weights so a bootstrap resample is a
re-weighting, not a copy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.optimize import minimize

from clipscale.errors import ClipscaleError
from clipscale.fit._blas import single_threaded_blas
from clipscale.fit.laws import Law, logsumexp, lse_and_jacobian

FRONTIER_BINS = 5
FRONTIER_EPS = 0.1
AT_BEST_RTOL = 1e-5


@dataclass
class Prepared:
    """Validated points of one fit: y in (0, 1], raw positive inputs, centred log inputs."""

    law: Law
    y: np.ndarray
    raw: dict[str, np.ndarray]
    logx: dict[str, np.ndarray]
    centre: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @cached_property
    def log_y(self) -> np.ndarray:
        return np.log(self.y)

    @cached_property
    def design(self) -> np.ndarray | None:
        """(n*m, p) constant term Jacobian of a law whose terms are linear in theta, else None."""
        if not self.law.linear_terms:
            return None
        dt = self.law.jac(np.zeros(len(self.law.theta)), self.logx, self.raw, self.centre)
        return dt.reshape(-1, dt.shape[-1])

    def subset(self, mask: np.ndarray) -> Prepared:
        """The same law on a subset of points, keeping the centring (so warm starts stay valid)."""
        return Prepared(
            self.law,
            self.y[mask],
            {k: v[mask] for k, v in self.raw.items()},
            {k: v[mask] for k, v in self.logx.items()},
            self.centre,
        )


@dataclass
class Optimum:
    params: dict[str, float]
    theta: np.ndarray | None
    objective: float
    n_starts: int
    n_starts_at_best: int
    converged: bool
    fit_mask: np.ndarray | None = None  # frontier: which (binned) points the line went through
    frontier_points: tuple[np.ndarray, np.ndarray] | None = None


def prepare(
    law: Law,
    y: np.ndarray,
    inputs: dict[str, np.ndarray | None],
    labels: dict[str, str] | None = None,
    loss: bool = False,
) -> Prepared:
    """Check inputs (present, same length, finite, positive; y in (0, 1], or > 0 for a loss); centre logs."""
    labels = labels or {}
    y = _as_vector(y, labels.get("y", "y"))
    raw: dict[str, np.ndarray] = {}
    for key in law.inputs:
        name = labels.get(key, key)
        if inputs.get(key) is None:
            raise ClipscaleError(f"law {law.name!r} needs input {key} ({law.formula}); none was given")
        v = _as_vector(inputs[key], name)
        if v.shape != y.shape:
            raise ClipscaleError(f"input {name} has {v.size} values but y has {y.size}")
        _check_rows(v <= 0, name, "must be > 0")
        raw[key] = v
    if loss:
        _check_rows(y <= 0, labels.get("y", "y"), "must be a positive loss")
    else:
        _check_rows(
            (y <= 0) | (y > 1),
            labels.get("y", "y"),
            "must be an error in (0, 1] (use --error for accuracies, --loss for losses)",
        )
    if y.size < law.n_params:
        raise ClipscaleError(
            f"law {law.name!r} has {law.n_params} parameters but only {y.size} points were given"
        )
    logx = {k: np.log(v) for k, v in raw.items()}
    centre = {k: float(np.median(v)) for k, v in logx.items()}
    return Prepared(law, y, raw, {k: v - centre[k] for k, v in logx.items()}, centre)


def _as_vector(v: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ClipscaleError(f"{name}: expected numbers") from None
    _check_rows(~np.isfinite(arr), name, "must be a finite number (missing or NaN?)")
    return arr


def _check_rows(bad: np.ndarray, name: str, what: str) -> None:
    if np.any(bad):
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(int(r)) for r in rows[:8]) + (" ..." if rows.size > 8 else "")
        raise ClipscaleError(f"{name} {what}: {rows.size} bad row(s) at position(s) {shown}")


def _term_members(law: Law) -> list[list[int]]:
    """Which parameters enter each term: Jacobian columns non-zero at generic (random) inputs."""
    rng = np.random.default_rng(0)
    raw = {k: np.exp(rng.normal(0.0, 3.0, 16)) for k in law.inputs}
    dt = law.jac(
        np.zeros(len(law.theta)), {k: np.log(v) for k, v in raw.items()}, raw, dict.fromkeys(raw, 0.0)
    )
    return [[j for j in range(dt.shape[2]) if np.any(dt[:, m, j] != 0)] for m in range(dt.shape[1])]


def unidentified_params(prep: Prepared) -> list[str]:
    """Public names of the parameters these points cannot pin down: within some term, the parameter's
    design column is a linear combination of the others (e.g. every run saw the same S, or no run
    repeated data so log R = 0). Only for laws whose terms are linear in theta."""
    if prep.design is None:
        return []
    p = len(prep.law.theta)
    dt = prep.design.reshape(prep.n, -1, p)
    bad: set[int] = set()
    for m, cols in enumerate(_term_members(prep.law)):
        block = dt[:, m, cols]
        rank = np.linalg.matrix_rank(block)
        bad.update(
            j for k, j in enumerate(cols) if np.linalg.matrix_rank(np.delete(block, k, axis=1)) == rank
        )
    return [prep.law.params[j] for j in sorted(bad)]


# ------------------------------------------------------------------------------------ lines
def fit_line(prep: Prepared, weights: np.ndarray | None = None) -> Optimum:
    """Weighted least squares of log10 E on log10 C; weights are bootstrap counts."""
    x, ly = np.log10(prep.raw["C"]), np.log10(prep.y)
    w = np.ones_like(x) if weights is None else weights
    keep = w > 0
    if np.unique(x[keep]).size < 2:
        raise ClipscaleError("a power law needs points at two or more distinct values of C")
    sw = np.sqrt(w[keep])
    design = np.stack([x[keep], np.ones(keep.sum())], axis=1) * sw[:, None]
    (slope, icpt), *_ = np.linalg.lstsq(design, ly[keep] * sw, rcond=None)
    res = ly[keep] - (slope * x[keep] + icpt)
    return Optimum(
        {"A": float(10**icpt), "alpha": float(slope)}, None, float(np.sum(w[keep] * res**2)), 1, 1, True
    )


def frontier_points(
    log10_c: np.ndarray, log10_e: np.ndarray, nbins: int = FRONTIER_BINS, eps: float = FRONTIER_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Bin log10 C into `nbins` equal bins over [min, max + eps]; keep the min log10 E of each
    non-empty bin, placed at the bin centre (the paper's figures notebook does the same)."""
    edges = np.linspace(log10_c.min(), log10_c.max() + eps, nbins + 1)
    idx = np.clip(np.searchsorted(edges, log10_c, side="right") - 1, 0, nbins - 1)
    xs, ys = [], []
    for i in range(nbins):
        sel = idx == i
        if sel.any():
            xs.append(0.5 * (edges[i] + edges[i + 1]))
            ys.append(log10_e[sel].min())
    return np.array(xs), np.array(ys)


def fit_frontier(prep: Prepared, weights: np.ndarray | None = None) -> Optimum:
    keep = np.ones(prep.n, bool) if weights is None else weights > 0
    xs, ys = frontier_points(np.log10(prep.raw["C"][keep]), np.log10(prep.y[keep]))
    if xs.size < 2:
        raise ClipscaleError("the frontier law needs points in at least two compute bins")
    slope, icpt = np.polyfit(xs, ys, 1)
    obj = float(np.sum((ys - (slope * xs + icpt)) ** 2))
    return Optimum(
        {"A": float(10**icpt), "alpha": float(slope)}, None, obj, 1, 1, True, frontier_points=(xs, ys)
    )


# ------------------------------------------------------------------------------------ non-linear
def huber_objective(
    theta: np.ndarray, prep: Prepared, delta: float, w: np.ndarray
) -> tuple[float, np.ndarray]:
    """Sum of w * Huber(log y - log E(theta)) / delta and its gradient in theta."""
    design = prep.design
    if design is None:
        logp, jac = lse_and_jacobian(prep.law, theta, prep.logx, prep.raw, prep.centre)
    else:  # fast path (bootstrap refits): terms = design @ theta, no per-call Jacobian build
        t = (design @ theta).reshape(prep.n, -1)
        top = t.max(axis=1, keepdims=True)
        e = np.exp(t - top)
        s = e.sum(axis=1, keepdims=True)
        logp, soft = (top + np.log(s))[:, 0], e / s
    r = prep.log_y - logp
    a = np.abs(r)
    h = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    wpsi = w * np.clip(r, -delta, delta)
    grad = jac.T @ wpsi if design is None else (soft * wpsi[:, None]).reshape(-1) @ design
    return float(np.dot(w, h)) / delta, -grad / delta


def grid_starts(prep: Prepared, delta: float, max_starts: int) -> np.ndarray:
    """The `max_starts` best points of the law's grid by objective, screened in one batch."""
    axes = prep.law.grid(prep.log_y)
    grid = np.array(list(itertools.product(*axes)))
    lo, hi = np.array(prep.law.bounds).T
    grid = np.clip(grid, lo, hi)
    chunks = np.array_split(grid, -(-grid.shape[0] // 4096))
    obj = np.concatenate([_grid_objective(prep, g, delta) for g in chunks])
    order = np.argsort(obj, kind="stable")
    return grid[order[:max_starts]]


def _grid_objective(prep: Prepared, grid: np.ndarray, delta: float) -> np.ndarray:
    """Huber objective (unweighted) of each row of `grid` (g, p)."""
    if prep.design is None:
        logp = logsumexp(prep.law.terms(grid, prep.logx, prep.raw, prep.centre))  # (g, n)
    else:  # linear terms: one matrix product, (n*m, p) @ (p, g)
        with single_threaded_blas():
            t = (prep.design @ grid.T).reshape(prep.n, -1, grid.shape[0])  # (n, m, g)
        top = t.max(axis=1)
        logp = (top + np.log(np.exp(t - top[:, None, :]).sum(axis=1))).T
    r = np.abs(prep.log_y[None, :] - logp)
    return np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum(axis=1)


def fit_lse(
    prep: Prepared,
    *,
    delta: float,
    weights: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    max_starts: int = 32,
) -> Optimum:
    """L-BFGS-B from each start; keeps the best; counts starts within AT_BEST_RTOL of it."""
    w = np.ones(prep.n) if weights is None else np.asarray(weights, float)
    if starts is None:
        starts = grid_starts(prep, delta, max_starts)
    results = []
    with single_threaded_blas():
        for th0 in np.atleast_2d(starts):
            res = minimize(
                huber_objective,
                th0,
                args=(prep, delta, w),
                jac=True,
                method="L-BFGS-B",
                bounds=prep.law.bounds,
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
    return Optimum(params, best.x, float(best.fun) * delta, len(results), at_best, converged)


def fit_prepared(
    prep: Prepared,
    *,
    delta: float,
    weights: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    max_starts: int = 32,
) -> Optimum:
    """Dispatch on the law's kind."""
    if prep.law.kind == "loglinear":
        return fit_line(prep, weights)
    if prep.law.kind == "frontier":
        return fit_frontier(prep, weights)
    return fit_lse(prep, delta=delta, weights=weights, starts=starts, max_starts=max_starts)


def r2_log(prep: Prepared, opt: Optimum) -> float:
    """R^2 of log E. For the frontier law it is measured on the frontier (binned) points it fits."""
    if opt.frontier_points is not None:
        xs, ys = opt.frontier_points
        pred = np.log10(opt.params["A"]) + opt.params["alpha"] * xs
        obs = ys
    else:
        obs = np.log(prep.y)
        pred = prep.law.log_predict(opt.params, prep.raw)
    ss_tot = float(np.sum((obs - obs.mean()) ** 2))
    return 1.0 - float(np.sum((obs - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
