"""`fit_law` and its result: the library entry point other stages call."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation.bootstrap import (
    ci_ends_at_bound,
    percentile_ci,
    run_bootstrap,
    undefined_counts,
)
from clipscale.fit.estimation.estimate import Optimum, fit_prepared, r2_log, r2_target
from clipscale.fit.estimation.link import IDENTITY, LinkChoice, inverse, link_name, parse_link
from clipscale.fit.estimation.objective import DEFAULT_OBJECTIVE
from clipscale.fit.estimation.points import Prepared, frontier_subset, prepare, unidentified_params
from clipscale.fit.estimation.validate import select_link
from clipscale.fit.laws import Law, derived_quantities, get_law
from clipscale.fit.saved import check_fit_entry, save_fits, saved_fit_document
from clipscale.progress import Progress

FIT_FORMAT = "clipscale-fit/1"
__all__ = ["FitResult", "fit_law", "save_fits", "saved_fit_document"]


@dataclass
class FitResult:
    """A fitted law. `params` use the formula's names; `ci` is empty without bootstrap."""

    law: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_points: int = 0
    objective: float = 0.0
    n_starts: int = 1
    n_starts_at_best: int = 1
    r2_log: float = float("nan")
    converged: bool = True
    derived: dict[str, float] = field(default_factory=dict)
    huber_delta: float = 1e-3
    bootstrap_params: list[list[float]] = field(default_factory=list)  # (B, n_params) for prediction CIs
    bootstrap_failed: int = 0
    bootstrap_undefined: dict[str, int] = field(default_factory=dict)  # derived name -> resamples without it
    input_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # fitted (min, max) per input
    frontier: str = "none"  # which points the law was fitted to (clipscale.fit.analyses.frontier)
    fixed: dict[str, float] = field(default_factory=dict)  # parameters held at given values (--fix)
    at_bound: list[str] = field(default_factory=list)  # free parameters that ended at a bound of their range
    r2: float = float("nan")  # R^2 of E itself (e.g. the loss), on the points fitted
    n_fitted: int = 0  # points the law went through: the frontier's, or all n_points
    frontier_points: dict[str, list[float]] = field(default_factory=dict)  # {"C": [...], "y": [...]}
    notes: list[str] = field(default_factory=list)  # caveats of the estimate (e.g. a lower minimum elsewhere)
    link: float = IDENTITY  # the law is of g_link(E) (clipscale.fit.estimation.link); predict() returns E
    link_choice: dict[str, Any] = field(default_factory=dict)  # how the link was chosen (LinkChoice)
    objective_kind: str = DEFAULT_OBJECTIVE  # what was minimised (clipscale.fit.estimation.objective)
    dof: dict[str, Any] = field(default_factory=dict)  # points fitted, free parameters, warning if < p + 2
    warnings: list[str] = field(default_factory=list)  # e.g. exact duplicate rows
    bootstrap_median: dict[str, float] = field(default_factory=dict)  # refits' median, beside params
    ci_unavailable: str | None = None  # why there is no CI although a bootstrap was asked for
    at_bound_reasons: dict[str, str] = field(default_factory=dict)  # at_bound name -> what is at which bound
    residuals: list[float] = field(default_factory=list)  # per point, only when every parameter is fixed

    def extrapolation(self, **inputs: Any) -> dict[str, float]:
        """Per input outside the fitted range: how far out the farthest value lies, as a factor (> 1)."""
        out = {}
        for k, (lo, hi) in self.input_ranges.items():
            if inputs.get(k) is None:
                continue
            x = np.asarray(inputs[k], float)
            factor = float(np.max(np.maximum(x / hi, lo / x)))
            if factor > 1.0 + 1e-9:
                out[k] = factor
        return out

    @property
    def formula(self) -> str:
        return get_law(self.law).formula

    def predict(self, **inputs: Any) -> np.ndarray:
        """Predicted error at the given inputs (e.g. C=..., or N=..., D=..., or N=..., U=..., S=...)."""
        law = get_law(self.law)
        values = law.predict(self.params, self._inputs(law, inputs))
        return inverse(values, self.link)

    def predict_samples(self, **inputs: Any) -> np.ndarray:
        """Predictions under every bootstrap parameter sample: (B, n). Empty without bootstrap."""
        law = get_law(self.law)
        x = self._inputs(law, inputs)
        return np.array(
            [
                inverse(law.predict(dict(zip(law.params, row, strict=True)), x), self.link)
                for row in self.bootstrap_params
            ]
        )

    def _inputs(self, law: Law, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """The law's inputs as float arrays; a missing one, or one not finite and > 0, is an error."""
        missing = [k for k in law.inputs if inputs.get(k) is None]
        if missing:
            raise ClipscaleError(
                f"law {self.law!r} needs inputs {', '.join(law.inputs)}; missing {', '.join(missing)}"
            )
        x = {k: np.asarray(inputs[k], float) for k in law.inputs}
        for k, v in x.items():
            bad = v[~(np.isfinite(v) & (v > 0))]
            if bad.size:
                raise ClipscaleError(f"input {k}: every value must be a finite number > 0, got {bad[0]:g}")
        return x

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-able dict (CIs as [lo, hi] lists)."""
        return {
            "format": FIT_FORMAT,
            "law": self.law,
            "formula": self.formula,
            "params": dict(self.params),
            "ci": {k: [v[0], v[1]] for k, v in self.ci.items()},
            "derived": dict(self.derived),
            "n_points": self.n_points,
            "objective": self.objective,
            "n_starts": self.n_starts,
            "n_starts_at_best": self.n_starts_at_best,
            "r2_log": self.r2_log,
            "converged": self.converged,
            "huber_delta": self.huber_delta,
            "bootstrap_failed": self.bootstrap_failed,
            "bootstrap_undefined": dict(self.bootstrap_undefined),
            "input_ranges": {k: [lo, hi] for k, (lo, hi) in self.input_ranges.items()},
            "frontier": self.frontier,
            "fixed": dict(self.fixed),
            "at_bound": list(self.at_bound),
            "r2": self.r2,
            "n_fitted": self.n_fitted,
            "frontier_points": {k: list(v) for k, v in self.frontier_points.items()},
            "notes": list(self.notes),
            "link": {"lambda": self.link, "name": link_name(self.link), **self.link_choice},
            "objective_kind": self.objective_kind,
            "dof": dict(self.dof),
            "warnings": list(self.warnings),
            "bootstrap_median": dict(self.bootstrap_median),
            "ci_unavailable": self.ci_unavailable,
            "at_bound_reasons": dict(self.at_bound_reasons),
            "residuals": list(self.residuals),
            "bootstrap_params": [list(map(float, r)) for r in self.bootstrap_params],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "saved fit") -> FitResult:
        """A saved fit, checked first (clipscale.fit.saved): a bad key is one line naming `source` and it."""
        check_fit_entry(d, source, names=None)
        try:
            law = get_law(d["law"])
            params = {k: float(d["params"][k]) for k in law.params}
            return cls(
                law=law.name,
                params=params,
                ci={k: (float(v[0]), float(v[1])) for k, v in d.get("ci", {}).items()},
                n_points=int(d.get("n_points", 0)),
                objective=float(d.get("objective") or 0.0),
                n_starts=int(d.get("n_starts", 1)),
                n_starts_at_best=int(d.get("n_starts_at_best", 1)),
                r2_log=float(d["r2_log"]) if d.get("r2_log") is not None else float("nan"),
                converged=bool(d.get("converged", True)),
                derived=dict(d.get("derived", {})),
                huber_delta=float(d.get("huber_delta", 1e-3)),
                bootstrap_failed=int(d.get("bootstrap_failed", 0)),
                bootstrap_undefined={k: int(v) for k, v in d.get("bootstrap_undefined", {}).items()},
                input_ranges={k: (float(v[0]), float(v[1])) for k, v in d.get("input_ranges", {}).items()},
                bootstrap_params=[list(map(float, r)) for r in d.get("bootstrap_params", [])],
                frontier=str(d.get("frontier", "none")),
                fixed={k: float(v) for k, v in d.get("fixed", {}).items()},
                at_bound=[str(v) for v in d.get("at_bound", [])],
                r2=float(d["r2"]) if d.get("r2") is not None else float("nan"),
                n_fitted=int(d.get("n_fitted", d.get("n_points", 0))),
                frontier_points=_frontier_points(d.get("frontier_points", {})),
                notes=[str(v) for v in d.get("notes", [])],
                link=float(d.get("link", {}).get("lambda", IDENTITY)),
                link_choice={k: v for k, v in d.get("link", {}).items() if k not in ("lambda", "name")},
                objective_kind=str(d.get("objective_kind", DEFAULT_OBJECTIVE)),
                dof=dict(d.get("dof") or {}),
                warnings=[str(v) for v in d.get("warnings", [])],
                bootstrap_median={k: float(v) for k, v in (d.get("bootstrap_median") or {}).items()},
                ci_unavailable=d.get("ci_unavailable"),
                at_bound_reasons={str(k): str(v) for k, v in (d.get("at_bound_reasons") or {}).items()},
                residuals=[float(v) for v in d.get("residuals") or []],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ClipscaleError(f"{source}: not a clipscale fit: missing or bad field {exc}") from None


def _frontier_points(d: dict[str, Any]) -> dict[str, list[Any]]:
    return {k: [bool(x) if k == "fitted" else float(x) for x in v] for k, v in d.items()}


def _refuse_unidentified(prep: Prepared, labels: dict[str, str]) -> None:
    """One line naming the parameters the points (a frontier's, if one is taken) cannot determine."""
    points = frontier_subset(prep) if prep.frontier != "none" else prep
    loose = unidentified_params(points)
    if loose:
        spread = ", ".join(f"{labels.get(k, k)} {np.unique(v).size}" for k, v in prep.raw.items())
        raise ClipscaleError(
            f"law {prep.law.name!r}: {', '.join(loose)} cannot be estimated from these points (distinct "
            f"values: {spread}){_hint(prep.law.name, loose, prep.raw)}; vary the inputs they multiply or use "
            "a law with fewer inputs"
        )


def _hint(law: str, loose: list[str], raw: dict[str, np.ndarray]) -> str:
    if law == "joint" and "rho" in loose and np.all(raw["S"] <= raw["U"]):
        return "; no run saw a sample twice (S <= U everywhere), so the cost of repeats is unknown"
    return ""


def fit_law(
    law: str,
    *,
    y: np.ndarray,
    C: np.ndarray | None = None,
    N: np.ndarray | None = None,
    D: np.ndarray | None = None,
    U: np.ndarray | None = None,
    S: np.ndarray | None = None,
    huber_delta: float = 1e-3,
    bootstrap: int = 0,
    seed: int = 0,
    groups: np.ndarray | None = None,
    labels: dict[str, str] | None = None,
    max_starts: int = 32,
    loss: bool = False,
    frontier: str = "none",
    fix: dict[str, float] | None = None,
    link: str | float | None = "error",
    objective: str = DEFAULT_OBJECTIVE,
    frontier_bins: int | None = None,
    fit_mask: np.ndarray | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Fit `law` to errors `y` in (0, 1] (any positive value with loss=True, e.g. a cross-entropy);
    `groups` labels the run of each point for the bootstrap; `labels` names inputs in error messages.
    `frontier` picks the points the law is fitted to (`fit.analyses.frontier`; needs C, an input of the
    law or not); `fix` holds parameters (public names) at given values. Bootstrap resamples draw runs
    from all points and take the frontier again. `link` is the scale the law is fitted on
    (fit.estimation.link: auto, error, neglog, odds, boxcox:LAM, or a lambda); the bootstrap keeps it.
    `objective` is what is minimised (fit.estimation.objective), by every refit too; `frontier_bins` the
    bin edges of a pareto / cherti frontier; `fit_mask` the points that may be fitted (--fit-where),
    applied after the frontier is taken over all of them. `progress` gets the bootstrap's done/total lines
    (clipscale.progress; its resamples are the same without it)."""
    spec = get_law(law)
    lam = parse_link(link)
    if not huber_delta > 0:
        raise ClipscaleError(f"huber_delta must be > 0, got {huber_delta}")
    if bootstrap < 0:
        raise ClipscaleError(f"bootstrap must be >= 0, got {bootstrap}")
    prep = prepare(
        spec, y, {"C": C, "N": N, "D": D, "U": U, "S": S}, labels, loss=loss, frontier=frontier, fix=fix,
        objective=objective, frontier_bins=frontier_bins, fit_mask=fit_mask,
    )
    if prep.frontier == "none" and prep.fit_mask is not None:  # no frontier: --fit-where is a filter
        mask = prep.fit_mask
        prep = replace(prep.subset(mask), fit_mask=None)
        groups = None if groups is None else np.asarray(groups)[mask]
    _refuse_unidentified(prep, labels or {})
    choice = LinkChoice(lam) if lam is not None else select_link(prep, delta=huber_delta)
    prep = prep.with_link(choice.lam)
    points = frontier_subset(prep) if prep.frontier != "none" else prep
    opt = fit_prepared(prep, delta=huber_delta, max_starts=max_starts)
    if not opt.converged:
        raise ClipscaleError(
            f"the {law} fit did not converge: none of {opt.n_starts} starts ended at a stationary point "
            f"and no two agreed (best loss {opt.objective:.3g}); check the data or try another law"
        )
    result = _result(spec, prep, opt, points, choice, huber_delta=huber_delta)
    if bootstrap:
        _attach_bootstrap(result, prep, opt, n_boot=bootstrap, seed=seed, delta=huber_delta, groups=groups,
                          progress=progress)
    return result


def _result(spec: Law, prep: Prepared, opt: Optimum, points: Prepared, choice: LinkChoice, *,
            huber_delta: float) -> FitResult:
    result = FitResult(
        law=spec.name,
        params=opt.params,
        n_points=prep.n,
        objective=opt.objective,
        n_starts=opt.n_starts,
        n_starts_at_best=opt.n_starts_at_best,
        r2_log=r2_log(prep, opt),
        converged=opt.converged,
        derived=derived_quantities(spec, opt.params),
        huber_delta=huber_delta,
        input_ranges={k: (float(v.min()), float(v.max())) for k, v in prep.raw.items()},
        frontier=prep.frontier,
        fixed=dict(prep.fix),
        at_bound=list(opt.at_bound),
        at_bound_reasons=dict(opt.at_bound),
        r2=r2_target(prep, opt),
        n_fitted=points.n,
        notes=list(opt.notes),
        link=choice.lam,
        link_choice={k: v for k, v in choice.to_dict().items() if k not in ("lambda", "name")},
    )
    result.objective_kind = prep.objective
    if opt.residuals is not None:
        result.residuals = [float(v) for v in opt.residuals]
    result.dof = {"n_fitted": points.n, "n_free": prep.n_free}
    if points.n < prep.n_free + MIN_DOF:
        result.dof["warning"] = (
            f"{points.n} points for {prep.n_free} free parameters (fewer than parameters + {MIN_DOF}): the "
            "law can pass through every point, so R² says nothing and the parameters are barely determined"
        )
        result.r2 = result.r2_log = float("nan")
    result.warnings = duplicate_warnings(prep)
    if prep.frontier != "none":  # what a figure marks as the frontier (cherti: bin centres and minima)
        every = frontier_subset(prep, masked=False)
        fitted = set(points.select_c.tolist())
        result.frontier_points = {
            "C": every.select_c.tolist(),
            "y": every.error.tolist(),
            "fitted": [c in fitted for c in every.select_c.tolist()],
        }
    return result


MIN_DOF = 2  # a fit needs at least parameters + 2 points for R² and CIs to mean something
MIN_OK_FRACTION = 2 / 3  # a CI from fewer successful refits than this is reported as unavailable


def duplicate_warnings(prep: Prepared) -> list[str]:
    """One warning naming the exact duplicate rows (same inputs and target): each counts twice."""
    cols = np.column_stack([prep.error, *prep.raw.values()])
    _, first, counts = np.unique(cols, axis=0, return_index=True, return_counts=True)
    dup = [int(i) for i, c in zip(first, counts, strict=True) if c > 1]
    if not dup:
        return []
    rows = [np.flatnonzero(np.all(cols == cols[i], axis=1)).tolist() for i in sorted(dup)]
    shown = "; ".join(", ".join(map(str, r)) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
    return [f"{sum(map(len, rows)) - len(rows)} exact duplicate row(s) (same inputs and target), fitted as "
            f"separate points: positions {shown}"]


def _attach_bootstrap(result: FitResult, prep: Prepared, opt: Optimum, *, n_boot: int, seed: int,
                      delta: float, groups: np.ndarray | None, progress: Progress | None = None) -> None:
    """Percentile CIs, the refits' median and parameters (what `predict` draws its CIs from); no CI (with
    the reason) from fewer than 2/3 successful refits or fewer points than parameters + 2."""
    if prep.n_free == 0:
        result.ci_unavailable = "every parameter is fixed: there is nothing to resample"
        return
    try:
        boot = run_bootstrap(prep, opt, n_boot=n_boot, seed=seed, delta=delta, groups=groups,
                             progress=progress)
    except ClipscaleError:
        result.bootstrap_failed = n_boot
        result.ci_unavailable = f"every one of {n_boot} bootstrap refits failed"
        return
    result.bootstrap_failed = boot.n_failed
    n_ok = boot.samples.shape[0]
    if n_ok < MIN_OK_FRACTION * n_boot:
        result.ci_unavailable = f"only {n_ok} of {n_boot} bootstrap refits succeeded (fewer than 2/3)"
    elif "warning" in result.dof:
        result.ci_unavailable = f"fewer points than parameters + {MIN_DOF}"
    med = np.nanmedian(boot.samples, axis=0)
    result.bootstrap_median = {k: float(v) for k, v in zip(boot.names, med, strict=True)
                               if k not in prep.fix and np.isfinite(v)}
    if result.ci_unavailable:
        return
    result.ci = {k: v for k, v in percentile_ci(boot).items() if k not in prep.fix}
    for name, why in ci_ends_at_bound(boot).items():
        old = result.at_bound_reasons.get(name)
        result.at_bound_reasons[name] = f"{old}; {why}" if old else why
        if name not in result.at_bound:
            result.at_bound.append(name)
    result.bootstrap_params = boot.samples[:, : prep.law.n_params].tolist()
    result.bootstrap_undefined = undefined_counts(boot)
