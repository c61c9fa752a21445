"""The points a law is fitted to: validated inputs and target, the scale the law is fitted on, which
parameters are fixed, and which frontier of the points is taken (`Prepared`, built by `prepare`); and
which parameters such points cannot determine. clipscale.fit.estimation.estimate fits a law to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.analyses.frontier import (
    FRONTIER_BINS,
    check_frontier,
    check_frontier_bins,
    cherti_bins,
    frontier_rows,
)
from clipscale.fit.estimation.link import IDENTITY, inverse, link_name, transform
from clipscale.fit.estimation.objective import DEFAULT_OBJECTIVE, check_objective
from clipscale.fit.laws import Law
from clipscale.fit.laws.constraints import check_fix


@dataclass
class Prepared:
    """Validated points of one fit: y in (0, 1] (or a positive loss), raw positive inputs, centred log
    inputs; which frontier of them the law is fitted to (`select_c`: the compute that frontier is taken
    over) and which parameters are held fixed (`fix`: public names; `fixed`: internal index -> value).
    With fixed parameters the inputs are not centred (centre 0), so that every internal parameter is a
    function of one public parameter and fixing one is a bound lo = hi; `grid_centre` keeps the medians
    the law's grid of starts is written for. `link` is the scale the law is fitted on
    (clipscale.fit.estimation.link): `y` is then g_link(E), `error` E itself."""

    law: Law
    y: np.ndarray
    raw: dict[str, np.ndarray]
    logx: dict[str, np.ndarray]
    centre: dict[str, float]
    frontier: str = "none"
    select_c: np.ndarray | None = None
    fix: dict[str, float] = field(default_factory=dict)
    fixed: dict[int, float] = field(default_factory=dict)
    grid_centre: dict[str, float] | None = None
    loss: bool = False
    link: float = IDENTITY
    observed: np.ndarray | None = None  # the error itself when y is its transform
    objective: str = DEFAULT_OBJECTIVE  # what the fit minimises (clipscale.fit.estimation.objective)
    frontier_bins: int | None = None  # --frontier-bins: bin edges of pareto / cherti (None: their default)
    fit_mask: np.ndarray | None = None  # --fit-where: which points may be fitted, applied after the frontier

    @property
    def error(self) -> np.ndarray:
        """The target itself (E, or the loss), whatever scale the law is fitted on."""
        return self.y if self.observed is None else self.observed

    def to_error(self, values: np.ndarray) -> np.ndarray:
        """The law's values (on the link's scale) as the target itself."""
        return inverse(values, self.link)

    def with_link(self, lam: float) -> Prepared:
        """The same points with the law fitted to g_lam(E) (clipscale.fit.estimation.link)."""
        e = self.error
        if lam == IDENTITY:
            return replace(self, y=e, observed=None, link=IDENTITY)
        if self.loss:
            raise ClipscaleError(f"--link {link_name(lam)}: a link is for errors in (0, 1], not for a --loss")
        if lam >= 0 and np.any(e >= 1):
            raise ClipscaleError(
                f"--link {link_name(lam)} needs accuracies > 0 ({int(np.sum(e >= 1))} points have "
                "error 1); use a link with a negative lambda (e.g. error)"
            )
        return replace(self, y=transform(e, lam), observed=e, link=lam)

    @property
    def n_free(self) -> int:
        return self.law.n_params - len(self.fix)

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
        return replace(
            self,
            y=self.y[mask],
            observed=None if self.observed is None else self.observed[mask],
            raw={k: v[mask] for k, v in self.raw.items()},
            logx={k: v[mask] for k, v in self.logx.items()},
            select_c=None if self.select_c is None else self.select_c[mask],
            fit_mask=None if self.fit_mask is None else self.fit_mask[mask],
        )


def prepare(
    law: Law,
    y: np.ndarray,
    inputs: dict[str, np.ndarray | None],
    labels: dict[str, str] | None = None,
    loss: bool = False,
    frontier: str = "none",
    fix: dict[str, float] | None = None,
    objective: str = DEFAULT_OBJECTIVE,
    frontier_bins: int | None = None,
    fit_mask: np.ndarray | None = None,
) -> Prepared:
    """Check inputs (present, same length, finite, positive; y in (0, 1], or > 0 for a loss); centre logs.
    A frontier other than `none` needs the compute C (an input of the law or not) to be taken over;
    `objective` is what the fit minimises (clipscale.fit.estimation.objective)."""
    labels = labels or {}
    frontier = _law_frontier(law, frontier)
    y = _as_vector(y, labels.get("y", "y"))
    raw: dict[str, np.ndarray] = {}
    for key in law.inputs:
        if inputs.get(key) is None:
            raise ClipscaleError(f"law {law.name!r} needs input {key} ({law.formula}); none was given")
        raw[key] = _positive_input(inputs[key], labels.get(key, key), y.size)
    _check_target(y, labels.get("y", "y"), loss)
    select_c = None
    if frontier != "none":
        if inputs.get("C") is None:
            raise ClipscaleError(f"--frontier {frontier} needs the compute --C to take the frontier over")
        select_c = raw["C"] if "C" in raw else _positive_input(inputs["C"], labels.get("C", "C"), y.size)
    fix, fixed = check_fix(law, fix)
    if y.size < law.n_params - len(fix):
        raise ClipscaleError(
            f"law {law.name!r} has {law.n_params - len(fix)} {'free ' if fix else ''}parameters but only "
            f"{y.size} points were given"
        )
    logx = {k: np.log(v) for k, v in raw.items()}
    medians = {k: float(np.median(v)) for k, v in logx.items()}
    centre = dict.fromkeys(medians, 0.0) if fixed else medians
    return Prepared(
        law,
        y,
        raw,
        {k: v - centre[k] for k, v in logx.items()},
        centre,
        frontier,
        select_c,
        fix,
        fixed,
        medians,
        loss,
        objective=check_objective(objective),
        frontier_bins=check_frontier_bins(frontier, frontier_bins),
        fit_mask=_fit_mask(fit_mask, y.size, frontier),
    )


def _fit_mask(mask: np.ndarray | None, n: int, frontier: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask, bool).reshape(-1)
    if mask.size != n:
        raise ClipscaleError(f"--fit-where selects {mask.size} values but y has {n}")
    if not mask.any():
        raise ClipscaleError("--fit-where keeps none of the points")
    return mask


def _law_frontier(law: Law, frontier: str) -> str:
    """The frontier to take: `--law frontier` is the power law on the cherti frontier and no other."""
    frontier = check_frontier(frontier)
    if law.kind != "frontier":
        return frontier
    if frontier not in ("none", "cherti"):
        raise ClipscaleError(
            f"--law frontier is the power law on the cherti frontier; use --law power --frontier {frontier}"
        )
    return "cherti"


def _check_target(y: np.ndarray, name: str, loss: bool) -> None:
    if loss:
        _check_rows(y <= 0, name, "must be a positive loss")
    else:
        what = "must be an error in (0, 1] (use --error for accuracies, --loss for losses)"
        _check_rows((y <= 0) | (y > 1), name, what)


def _positive_input(values: object, name: str, n: int) -> np.ndarray:
    v = _as_vector(values, name)
    if v.size != n:
        raise ClipscaleError(f"input {name} has {v.size} values but y has {n}")
    _check_rows(v <= 0, name, "must be > 0")
    return v


def _as_vector(v: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ClipscaleError(f"{name}: expected numbers") from None
    _check_rows(~np.isfinite(arr), name, "must be a finite number (missing or NaN? rows of another task or "
                "dataset lack it: select rows with --where)")
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
    for m, members in enumerate(_term_members(prep.law)):
        cols = [j for j in members if j not in prep.fixed]  # a fixed parameter needs no data
        if not cols:
            continue
        block = dt[:, m, cols]
        rank = np.linalg.matrix_rank(block)
        bad.update(
            j for k, j in enumerate(cols) if np.linalg.matrix_rank(np.delete(block, k, axis=1)) == rank
        )
    return [prep.law.params[j] for j in sorted(bad)]


def frontier_subset(prep: Prepared, weights: np.ndarray | None = None, *, masked: bool = True) -> Prepared:
    """The points of `prep.frontier` among those with weight > 0, as a Prepared of their own (frontier
    `none`), then (`masked`) only those `fit_mask` (--fit-where) keeps. `cherti` on a law of C alone:
    bin minima at bin centres; otherwise real rows."""
    keep = np.ones(prep.n, bool) if weights is None else np.asarray(weights) > 0
    base = prep.subset(keep)
    c = base.select_c
    use = base.fit_mask if masked and base.fit_mask is not None else np.ones(base.n, bool)
    if prep.frontier == "cherti" and prep.law.inputs == ("C",):
        nbins = FRONTIER_BINS if prep.frontier_bins is None else prep.frontier_bins - 1
        xs, ys, rows = cherti_bins(np.log10(c), np.log10(base.y), nbins)
        xs, ys = xs[use[rows]], ys[use[rows]]
        if xs.size < 2:
            raise ClipscaleError("the cherti frontier needs (fitted) points in at least two compute bins")
        cc = 10.0**xs
        return replace(
            base,
            y=10.0**ys,
            observed=None if base.observed is None else base.to_error(10.0**ys),
            raw={"C": cc},
            logx={"C": np.log(cc) - base.centre["C"]},
            select_c=cc,
            frontier="none",
            fit_mask=None,
        )
    rows = frontier_rows(prep.frontier, c, base.y, prep.frontier_bins)
    mask = np.zeros(base.n, bool)
    mask[rows] = True
    mask &= use
    if mask.sum() < max(2, base.n_free):
        raise ClipscaleError(
            f"the {prep.frontier} frontier keeps {int(mask.sum())} points"
            f"{' that --fit-where selects' if base.fit_mask is not None and masked else ''}, fewer than the "
            f"{max(2, base.n_free)} that law {prep.law.name!r} needs; use --frontier none or more runs"
        )
    return replace(base.subset(mask), frontier="none", fit_mask=None)
