"""`clipscale compare`: groups compared across compute, not by their exponents alone (Nezhurina et al.
2025): for each pair of groups, the predicted error difference at given compute values and the compute
where one group overtakes the other, each with a bootstrap CI.

The groups' bootstrap refits are independent resamples, so pairing their i-th refits draws the
difference (as `fit.table.exponent_differences` does). The crossover is found on a grid of
`GRID_POINTS` log-spaced compute values over [the smallest C measured, the largest C asked about],
refined by linear interpolation of the difference in log C; no library root finder takes a batch of
curves with an unknown number of roots. A refit without a crossover in that range has its difference of
one sign throughout: it counts as a crossover below the range when that sign is the one the full-data
difference has after its crossover, and beyond the range otherwise, so the CI's endpoints can be open.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.laws import get_law
from clipscale.fit.result import FitResult

CI_LEVEL = 0.95
GRID_POINTS = 1000
DEFAULT_FACTORS = (1.0, 10.0, 100.0)  # --at default: the largest C measured, 10x and 100x beyond it


def default_at(fits: list[tuple[Any, FitResult]]) -> list[float]:
    """The largest C measured by any group, and 10x and 100x beyond it."""
    c_max = max(f.input_ranges["C"][1] for _, f in fits)
    return [c_max * k for k in DEFAULT_FACTORS]


def compare_fits(
    fits: list[tuple[Any, FitResult]], *, at: list[float] | None = None, level: float = CI_LEVEL
) -> dict[str, Any]:
    """Every pair of groups: E_a − E_b at each C of `at` (default `default_at`) with a percentile CI, and
    the crossover compute with its CI (null: none in range). Needs laws of compute alone."""
    _check_fits(fits)
    at = default_at(fits) if at is None else [float(c) for c in at]
    bad = [c for c in at if not (np.isfinite(c) and c > 0)]
    if bad or not at:
        raise ClipscaleError(f"--at: expected compute values > 0, got {bad[0] if bad else 'none'}")
    c_lo = min(f.input_ranges["C"][0] for _, f in fits)
    span = (c_lo, max(max(at), max(f.input_ranges["C"][1] for _, f in fits)))
    pairs = []
    for i, (ga, fa) in enumerate(fits):
        for gb, fb in fits[i + 1 :]:
            pairs.append(_compare_pair(ga, fa, gb, fb, at=at, span=span, level=level))
    return {"at": at, "range": list(span), "level": level, "pairs": pairs}


def _check_fits(fits: list[tuple[Any, FitResult]]) -> None:
    if len(fits) < 2:
        raise ClipscaleError(f"compare needs two or more groups, got {len(fits)}")
    for g, f in fits:
        if get_law(f.law).inputs != ("C",):
            raise ClipscaleError(
                f"group {g!r}: law {f.law!r} depends on {', '.join(get_law(f.law).inputs)}; compare needs a "
                "law of compute alone (power, frontier, saturating, offset)"
            )
        if "C" not in f.input_ranges:
            raise ClipscaleError(f"group {g!r}: the fit has no input_ranges for C (the compute fitted on)")


def _samples(fit: FitResult, c: np.ndarray) -> np.ndarray | None:
    """Predicted error under each bootstrap refit (B, n), or None where the fit has no usable CI."""
    if fit.ci_unavailable or not fit.bootstrap_params:
        return None
    return fit.predict_samples(C=c)


def _compare_pair(ga: Any, fa: FitResult, gb: Any, fb: FitResult, *, at: list[float],
                  span: tuple[float, float], level: float) -> dict[str, Any]:
    c_at = np.asarray(at)
    grid = np.geomspace(span[0], span[1], GRID_POINTS)
    both = np.concatenate([c_at, grid])
    sa, sb = _samples(fa, both), _samples(fb, both)
    diff = fa.predict(C=c_at) - fb.predict(C=c_at)
    out: dict[str, Any] = {"groups": [ga, gb], "ci_note": None}
    boot = None
    if sa is None or sb is None:
        why = [f"{g}: {f.ci_unavailable or 'no bootstrap refits'}" for g, f, s in ((ga, fa, sa), (gb, fb, sb))
               if s is None]
        out["ci_note"] = "no CI (" + "; ".join(why) + ")"
    else:
        k = min(len(sa), len(sb))
        boot = sa[:k] - sb[:k]
        out["n_refits"] = k
    q = [50 * (1 - level), 50 * (1 + level)]
    out["at"] = []
    for j, c in enumerate(at):
        row: dict[str, Any] = {"C": c, "difference": float(diff[j]), "ci": None, "excludes_zero": None}
        if boot is not None:
            lo, hi = np.percentile(boot[:, j], q)
            row["ci"] = [float(lo), float(hi)]
            row["excludes_zero"] = bool(lo > 0 or hi < 0)
        out["at"].append(row)
    point_d = fa.predict(C=grid) - fb.predict(C=grid)
    out["crossover"] = _crossover(grid, point_d, None if boot is None else boot[:, len(at):], q, (ga, gb))
    return out


def _crossings(grid: np.ndarray, d: np.ndarray) -> list[float]:
    """Compute values where d changes sign, interpolated linearly in log C."""
    lg = np.log(grid)
    s = np.sign(d)
    idx = np.flatnonzero(s[:-1] * s[1:] < 0)
    out = [float(np.exp(lg[i] - d[i] * (lg[i + 1] - lg[i]) / (d[i + 1] - d[i]))) for i in idx]
    out += [float(grid[i]) for i in np.flatnonzero(s == 0) if 0 < i < len(grid) - 1]
    return sorted(out)


def _crossover(grid: np.ndarray, d: np.ndarray, boot: np.ndarray | None, q: list[float],
               groups: tuple[Any, Any]) -> dict[str, Any]:
    """The full-data crossover (the first, where there are several) and its CI over the refits."""
    found = _crossings(grid, d)
    out: dict[str, Any] = {"C": found[0] if found else None, "all": found, "ci": None,
                           "refits_with_crossover": None, "lower_after": None}
    if found:
        after = d[grid > found[0]]
        out["lower_after"] = groups[1] if after.size and after[-1] > 0 else groups[0]
    if boot is None:
        return out
    ends, n_in = [], 0
    late_sign = np.sign(d[-1])  # the sign after the full-data crossover (or throughout, without one)
    for row in boot:
        c = _crossings(grid, row)
        if c:
            n_in += 1
            ends.append(np.log(c[0]))
        else:
            ends.append(-np.inf if found and np.sign(row[-1]) == late_sign else np.inf)
    out["refits_with_crossover"] = n_in
    if found:
        lo, hi = np.percentile(np.asarray(ends), q, method="inverted_cdf")  # no interpolation with ±inf
        out["ci"] = [float(np.exp(v)) if np.isfinite(v) else None for v in (lo, hi)]
    return out


def compare_table(df: Any, *, by: str, at: list[float] | None = None, bootstrap: int = 200,
                  **options: Any) -> dict[str, Any]:
    """Fit the law per group of `by` (the options of `fit.table.fit_table_results`, `progress` among them)
    with `bootstrap` refits, then `compare_fits`."""
    from clipscale.fit.table import fit_table_results

    if bootstrap < 2:
        raise ClipscaleError(f"--bootstrap {bootstrap}: compare needs refits for its CIs (e.g. 200)")
    doc, results = fit_table_results(df, by=by, bootstrap=bootstrap, **options)
    out = compare_fits([(g, r) for g, r, _ in results], at=at)
    return {"by": by, "law": doc["law"], "source": "table", **out}


def compare_saved(path: str, *, by: str | None = None, at: list[float] | None = None) -> dict[str, Any]:
    """Compare the fits of a saved document (`clipscale fit --save`, a study's fits.json) from their saved
    `bootstrap_params`; `by`, if given, must be the column the document was grouped by. A study's fits
    (entries naming their `distribution`) are compared per target and law, distribution against
    distribution, as the study's report does."""
    from clipscale.fit.predict import read_fits

    doc, fits = read_fits(path)
    if by is not None and doc.get("by") not in (None, by):
        raise ClipscaleError(f"{path}: the fits are grouped by {doc['by']!r}, not --by {by!r}")
    head = {"by": doc.get("by", by), "law": ",".join(sorted({f.law for _, f in fits})), "source": str(path)}
    entries = doc["fits"]
    if not all("distribution" in e for e in entries):
        return {**head, **compare_fits(fits, at=at)}
    parts: dict[tuple[Any, ...], list[tuple[Any, FitResult]]] = {}
    for e, (_, f) in zip(entries, fits, strict=True):
        parts.setdefault((e.get("dataset"), e.get("metric"), f.law), []).append((e["distribution"], f))
    pairs, out = [], {}
    for (dataset, metric, law), group in parts.items():
        if len(group) < 2 or get_law(law).inputs != ("C",):
            continue
        out = compare_fits(group, at=at)
        pairs += [{**p, "dataset": dataset, "metric": metric, "law": law, "range": out["range"]}
                  for p in out["pairs"]]
    if not pairs:
        raise ClipscaleError(f"{path}: no target has two or more distributions fitted with a law of compute")
    return {**head, "at": at, "range": None, "level": out["level"], "pairs": pairs}


def is_saved_fits(path: str) -> bool:
    """A saved-fit document (a JSON object with a `fits` key), as opposed to a results table."""
    import json
    from pathlib import Path

    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # perhaps JSON lines: a table
    return isinstance(doc, dict) and "fits" in doc
