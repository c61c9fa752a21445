"""`clipscale predict`: a saved fit -> predicted error with a bootstrap CI, and compute-optimal
allocation of a budget C = k·N·D (k = 6 for LLM FLOPs with N params, 1 for CLIP GMACs x samples)
among the models of a ladder or over a continuous N (bounded scalar minimisation in log N).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from clipscale.errors import ClipscaleError
from clipscale.fit.groups import find_group, group_label
from clipscale.fit.laws import get_law
from clipscale.fit.result import FitResult, save_fits, saved_fit_document
from clipscale.fit.saved import check_fits_document

__all__ = ["EXTRAPOLATION_WARN", "extrapolation_warnings", "load_fit",
           "optimal_allocation", "predict_with_ci", "read_fits", "save_fits",
           "saved_fit_document"]


def _read_document(path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The checked entries of a saved-fit document (clipscale.fit.saved)."""
    import json

    what = "a saved fit (the JSON of `clipscale fit --save`, or a study's fits.json)"
    if not path.is_file():
        raise ClipscaleError(f"{path}: no such file; expected {what}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not JSON"
        raise ClipscaleError(f"{path}: cannot read {what}: {reason}") from None
    return doc, check_fits_document(doc, str(path))


def read_fits(path: str | Path) -> tuple[dict[str, Any], list[tuple[Any, FitResult]]]:
    """Every fit of a saved document, as (group, FitResult), each checked on read."""
    path = Path(path)
    doc, fits = _read_document(path)
    return doc, [(f.get("group"), FitResult.from_dict(f, f"{path}: fits[{i}]")) for i, f in enumerate(fits)]


def load_fit(path: str | Path, group: str | None = None) -> FitResult:
    """One fit of a saved document: the only one, or the one `group` names (`clipscale.fit.groups`)."""
    path = Path(path)
    _, fits = _read_document(path)
    if group is None:
        if len(fits) > 1:
            raise ClipscaleError(
                f"{path} holds {len(fits)} groups; pick one with --group "
                f"({', '.join(group_label(f.get('group')) for f in fits)})"
            )
        return FitResult.from_dict(fits[0], f"{path}: fits[0]")
    i = find_group([f.get("group") for f in fits], group, where=str(path))
    return FitResult.from_dict(fits[i], f"{path}: fits[{i}]")


EXTRAPOLATION_WARN = 10.0  # beyond this factor past the fitted range a prediction gets a warning


def extrapolation_warnings(fit: FitResult, factors: dict[str, float],
                           names: dict[str, str] | None = None) -> list[str]:
    """One warning per input more than EXTRAPOLATION_WARN times outside the range the law was fitted on;
    `names` maps a key of `factors` to the law input whose range it is (default: itself)."""
    out = []
    for k, factor in factors.items():
        if factor > EXTRAPOLATION_WARN:
            lo, hi = fit.input_ranges[(names or {}).get(k, k)]
            out.append(f"{k} is more than {EXTRAPOLATION_WARN:g}x beyond the fitted range ({factor:.3g}x; "
                       f"fitted {lo:.4g} to {hi:.4g}): the law is untested there")
    return out


def predict_with_ci(fit: FitResult, inputs: dict[str, np.ndarray], level: float = 0.95) -> dict[str, Any]:
    pred = fit.predict(**inputs)
    factors = fit.extrapolation(**inputs)
    out: dict[str, Any] = {
        "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()},
        "predicted_error": pred.tolist(),
        "extrapolation": factors,  # input -> factor beyond the fitted range
        "warnings": extrapolation_warnings(fit, factors),
    }
    if fit.ci_unavailable:
        out["ci_note"] = fit.ci_unavailable
    elif fit.bootstrap_params:
        s = fit.predict_samples(**inputs)
        out["ci_low"] = np.percentile(s, 50 * (1 - level), axis=0).tolist()
        out["ci_high"] = np.percentile(s, 50 * (1 + level), axis=0).tolist()
    return out


def _error_at(fit: FitResult, n: float, budget: float, k: float, unique: float | None) -> float:
    d = budget / (k * n)
    if fit.law in ("joint", "data-constrained"):
        if unique is None:
            raise ClipscaleError(
                f"the {fit.law} law needs --U (unique samples available) to allocate compute"
            )
        if fit.law == "data-constrained":
            return float(fit.predict(N=[n], D=[d], U=[unique])[0])
        return float(fit.predict(N=[n], U=[unique], S=[d])[0])
    return float(fit.predict(N=[n], D=[d])[0])


def optimal_allocation(
    fit: FitResult,
    budget: float,
    *,
    ladder: list[float] | None = None,
    k: float = 1.0,
    unique: float | None = None,
    n_range: tuple[float, float] = (1e-3, 1e15),
) -> dict[str, Any]:
    """Minimise predicted error over N with D = budget / (k N)."""
    law = get_law(fit.law)
    if "N" not in law.inputs:
        raise ClipscaleError(
            f"law {fit.law!r} depends on compute only; allocation needs chinchilla, joint or data-constrained"
        )
    if not budget > 0:
        raise ClipscaleError(f"compute budget must be > 0, got {budget}")
    if ladder:
        errs = [_error_at(fit, n, budget, k, unique) for n in ladder]
        n_best = float(ladder[int(np.argmin(errs))])
    else:
        lo, hi = np.log(n_range[0]), np.log(min(n_range[1], budget / k))
        res = minimize_scalar(
            lambda ln: _error_at(fit, float(np.exp(ln)), budget, k, unique),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-6},
        )
        n_best = float(np.exp(res.x))
    d_best = budget / (k * n_best)
    dkey = "S" if fit.law == "joint" else "D"  # the joint law's samples seen are the allocation's D
    factors = fit.extrapolation(N=[n_best], **{dkey: [d_best]}, U=None if unique is None else [unique])
    factors = {("D" if key == dkey else key): v for key, v in factors.items()}  # named as the allocation's
    return {
        "budget": budget,
        "N": n_best,
        "D": d_best,
        "predicted_error": _error_at(fit, n_best, budget, k, unique),
        "extrapolation": factors,  # N, D (of the fitted D, or S for the joint law), U -> factor beyond
        "warnings": extrapolation_warnings(fit, factors, {"D": dkey}),
    }
