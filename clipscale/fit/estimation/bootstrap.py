"""Percentile bootstrap over runs.

A resample draws runs (groups of points: e.g. all checkpoints of one training run) with
replacement; it is applied as integer weights on the points, and non-linear refits start from the
full-data optimum (warm start), which is what makes 1,000 refits take seconds. A refit that fails
is counted and dropped, never silently turned into NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation.bounds import bound_sides
from clipscale.fit.estimation.estimate import Optimum, fit_prepared
from clipscale.fit.estimation.points import Prepared
from clipscale.fit.laws import derived_quantities
from clipscale.progress import Progress, Ticker

CI_LEVEL = 0.95


@dataclass
class BootstrapResult:
    names: list[str]  # parameter names then derived-quantity names
    samples: np.ndarray  # (n_ok, len(names))
    n_failed: int
    at_bound: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, lower|upper) -> refits


def group_index(groups: np.ndarray | None, n: int,
                content: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Map run labels to 0..G-1 (each point its own run when groups is None).

    With `content` (one row of values per point), runs are numbered in the order of their points'
    values, not of their labels, so a resample draws the same runs whatever they are called: a study's
    run ids hash its data paths, and its CIs must not move when the study's folder does."""
    if groups is None:
        if content is None:
            return np.arange(n), n
        groups = np.arange(n)
    groups = np.asarray(groups)
    if groups.shape[0] != n:
        raise ClipscaleError(f"groups has {groups.shape[0]} labels but there are {n} points")
    labels, idx = np.unique(groups.astype(str), return_inverse=True)
    if content is not None:
        rows = np.asarray(content, float).reshape(n, -1)
        keys = [tuple(sorted(map(tuple, rows[idx == g].tolist()))) for g in range(len(labels))]
        order = sorted(range(len(labels)), key=lambda g: (keys[g], labels[g]))
        rank = np.empty(len(labels), int)
        rank[order] = np.arange(len(labels))
        idx = rank[idx]
    return idx, len(labels)


def point_values(prep: Prepared) -> np.ndarray:
    """Each point's inputs and target, in a fixed column order: what orders the runs of a resample."""
    columns = [prep.raw[k] for k in sorted(prep.raw)] + [prep.error]
    return np.column_stack([np.asarray(c, float) for c in columns])


def run_bootstrap(
    prep: Prepared, full: Optimum, *, n_boot: int, seed: int, delta: float, groups: np.ndarray | None = None,
    progress: Progress | None = None, min_interval_s: float | None = None,
) -> BootstrapResult:
    """Refit on `n_boot` resamples of runs; returns parameter (and derived) samples. `progress` gets a
    `bootstrap done/total` line at most every `min_interval_s` (clipscale.progress.Ticker); the resamples
    are the same with or without it."""
    idx, n_groups = group_index(groups, prep.n, point_values(prep))
    rng = np.random.default_rng(seed)
    dnames = list(derived_quantities(prep.law, full.params))
    names = list(prep.law.params) + dnames
    rows, failed, sides = [], 0, {}
    ticker = Ticker(progress, n_boot, what="bootstrap", min_interval_s=min_interval_s)
    for i in range(n_boot):
        ticker.tick(i, f"{failed} failed" if failed else "")
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        w = counts[idx].astype(float)
        if np.count_nonzero(w) < prep.law.n_params:
            failed += 1
            continue
        try:
            opt = fit_prepared(prep, delta=delta, weights=w, starts=full.theta)
        except ClipscaleError:
            failed += 1
            continue
        if not opt.converged:
            failed += 1
            continue
        params = [opt.params[k] for k in prep.law.params]
        if not np.all(np.isfinite(params)):
            failed += 1
            continue
        derived = derived_quantities(prep.law, opt.params)  # a resample may have no optimum: NaN here
        rows.append(params + [derived.get(k, np.nan) for k in dnames])
        if opt.theta is not None:
            for name, where in bound_sides(opt.fitted or prep, opt.theta).items():
                key = (name, where.split()[-1])
                sides[key] = sides.get(key, 0) + 1
    ticker.finish(f"{failed} failed" if failed else "")
    if not rows:
        raise ClipscaleError(f"every one of {n_boot} bootstrap refits failed")
    return BootstrapResult(names, np.array(rows), failed, sides)


def ci_ends_at_bound(boot: BootstrapResult, level: float = CI_LEVEL) -> dict[str, str]:
    """Parameters whose percentile CI has an end among refits that ended at a bound (more than the
    (1 - level) / 2 share of refits on that side), name -> why."""
    n_ok, tail = boot.samples.shape[0], (1 - level) / 2
    out = {}
    for (name, side), k in sorted(boot.at_bound.items()):
        if k > tail * n_ok:
            why = f"the CI's {side} end is at the {side} bound ({k} of {n_ok} refits ended there)"
            out[name] = f"{out[name]}; {why}" if name in out else why
    return out


def undefined_counts(boot: BootstrapResult) -> dict[str, int]:
    """Per derived quantity, how many resamples had no value for it (e.g. no compute-optimal size)."""
    bad = (~np.isfinite(boot.samples)).sum(axis=0)
    return {name: int(n) for name, n in zip(boot.names, bad, strict=True) if n}


def percentile_ci(boot: BootstrapResult, level: float = CI_LEVEL) -> dict[str, tuple[float, float]]:
    """Percentile CIs; a derived quantity's CI is over the resamples where it is defined (see
    `undefined_counts`) and is left out when none has it."""
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    out = {}
    for j, name in enumerate(boot.names):
        col = boot.samples[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            out[name] = (float(np.percentile(col, lo)), float(np.percentile(col, hi)))
    return out
