"""Out-of-sample checks of a law: a held-out set of rows, and leave-one-run-out.

Errors are reported in the target's units (`summarize`): accuracy points for errors in (0, 1], loss
units and relative % for a loss. Non-linear refits
start from the full-data optimum plus the best few grid points, so a LOO over 29 runs costs
seconds, not minutes. `select_link` is `--link auto` (fit.estimation.link); with `auto_link` the checks
choose the link again on each fold's training rows, so what they report is the whole procedure's error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation.bootstrap import group_index
from clipscale.fit.estimation.estimate import Optimum, fit_prepared, grid_starts
from clipscale.fit.estimation.link import (
    IDENTITY,
    LAMBDAS,
    LinkChoice,
    choose_link,
    forward_splits,
    parse_link,
)
from clipscale.fit.estimation.points import Prepared, frontier_subset, unidentified_params
from clipscale.progress import Progress, Ticker

LOO_EXTRA_STARTS = 1
WARM_GRID_STARTS = 4  # grid starts of each further link's full fit (besides its neighbour's optimum)


@dataclass
class Warm:
    """Per candidate link the optimum on all rows (where refits start); the forward fits made so far,
    keyed by link and the training rows' content (a leave-one-out fold that keeps all of a split's
    training rows reuses that split's fit); and per link and predicted size the first such fit's optimum,
    where the same split of another fold starts (it differs by one run, so one start suffices)."""

    thetas: dict[float, np.ndarray | None]
    fits: dict[tuple[float, str], dict[str, float]] = field(default_factory=dict)
    split_thetas: dict[tuple[float, float], np.ndarray] = field(default_factory=dict)

    def get(self, lam: float) -> np.ndarray | None:
        return self.thetas.get(lam)


def _content_key(prep: Prepared) -> str:
    h = hashlib.sha1(prep.error.tobytes())
    for k in sorted(prep.raw):
        h.update(prep.raw[k].tobytes())
    return h.hexdigest()


def _starts(
    prep: Prepared, full: Optimum | np.ndarray | None, delta: float, n_grid: int = LOO_EXTRA_STARTS
) -> np.ndarray | None:
    if prep.law.kind != "lse":
        return None
    theta = full.theta if isinstance(full, Optimum) else full
    extra = grid_starts(prep, delta, n_grid)
    return extra if theta is None else np.vstack([theta, extra])


def _errors(prep: Prepared, params: dict[str, float], mask: np.ndarray) -> np.ndarray:
    """Predicted minus observed target (E itself, whatever the link) at the rows of `mask`."""
    pred = prep.law.predict(params, {k: v[mask] for k, v in prep.raw.items()})
    return prep.to_error(pred) - prep.error[mask]


def _fittable(prep: Prepared) -> bool:
    if prep.n < max(2, prep.n_free):
        return False
    try:
        points = frontier_subset(prep) if prep.frontier != "none" else prep
    except ClipscaleError:
        return False
    return not unidentified_params(points)


def warm_starts(prep: Prepared, *, delta: float, lams: tuple[float, ...] = LAMBDAS) -> Warm:
    """The full-data optimum of `prep` under every candidate link, what refits start from. The first link
    gets the whole search; each next one starts from its neighbour's optimum (the law's parameters move
    smoothly with lambda) plus the best WARM_GRID_STARTS grid points."""
    out: dict[float, np.ndarray | None] = {}
    previous = None
    for lam in lams:
        try:
            linked = prep.with_link(lam)
            starts = _starts(linked, previous, delta, WARM_GRID_STARTS) if previous is not None else None
            out[lam] = previous = fit_prepared(linked, delta=delta, starts=starts).theta
        except ClipscaleError:
            out[lam] = None
    return Warm(out)


def select_link(prep: Prepared, *, delta: float, warm: Warm | None = None) -> LinkChoice:
    """`--link auto` for `prep` (points on the scale of E): the candidate link that, fitted on the
    smaller model sizes, predicts the next size best (clipscale.fit.estimation.link). E where that cannot be
    tested: a loss, a law without a model size N, or fewer than 3 sizes with enough rows."""
    if prep.loss:
        return LinkChoice(IDENTITY, "auto", reason="a loss is fitted on its own scale")
    if "N" not in prep.raw:
        return LinkChoice(IDENTITY, "auto", reason="the law has no model size N to validate over")
    splits = [(tr, te) for tr, te in forward_splits(prep.raw["N"]) if _fittable(prep.subset(tr))]
    if not splits:
        return LinkChoice(
            IDENTITY, "auto", reason="fewer than 3 model sizes (or too few rows below the largest)"
        )
    candidates = [lam for lam in LAMBDAS if lam < 0 or np.all(prep.error < 1)]
    warm = warm_starts(prep, delta=delta, lams=tuple(candidates)) if warm is None else warm

    def forward_errors(lam: float, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        linked = prep.with_link(lam)
        sub = linked.subset(train)
        key = (lam, _content_key(sub))
        if key not in warm.fits:
            split = (lam, float(prep.raw["N"][test][0]))
            near = warm.split_thetas.get(split)
            starts = _starts(sub, warm.get(lam), delta) if near is None else near[None, :]
            try:
                opt = fit_prepared(sub, delta=delta, starts=starts)
            except ClipscaleError:  # no finite optimum on this scale: it cannot be chosen
                return np.full(int(test.sum()), np.nan)
            warm.fits[key] = opt.params
            if near is None and opt.theta is not None:
                warm.split_thetas[split] = opt.theta
        return _errors(linked, warm.fits[key], test)

    predicted = sorted({float(prep.raw["N"][te][0]) for _, te in splits})
    return choose_link(candidates, splits, forward_errors, predicted)


def summarize(err: np.ndarray, y: np.ndarray | None = None, loss: bool = False) -> dict[str, Any]:
    """MAE in the target's units. An error in (0, 1] (1 − accuracy with --error): `mae` and, x100, accuracy
    points (`mae_pct`, `max_abs_err_pct`, `errors_pct`). A loss (nats, say): `mae` and `max_abs_err` in
    loss units and the error relative to the observed loss in % (`mae_rel_pct`, `max_rel_err_pct`); no
    "points", which mean nothing for a loss."""
    a = np.abs(err)
    out: dict[str, Any] = {"n": int(a.size), "units": "loss" if loss else "points", "mae": float(a.mean())}
    if loss:
        rel = 100 * a / np.abs(y)
        out.update(
            max_abs_err=float(a.max()),
            mae_rel_pct=float(rel.mean()),
            max_rel_err_pct=float(rel.max()),
            errors=err.tolist(),
        )
    else:
        out.update(
            mae_pct=float(100 * a.mean()),
            max_abs_err_pct=float(100 * a.max()),
            errors_pct=(100 * err).tolist(),
        )
    return out


def holdout(
    prep: Prepared,
    mask: np.ndarray,
    *,
    delta: float,
    full: Optimum | None = None,
    auto_link: bool = False,
    warm: Warm | None = None,
) -> dict[str, Any]:
    """Fit on rows where `mask` is False, report the error on rows where it is True. With `auto_link`
    the link is chosen on the training rows alone (`prep` on the scale of E; `warm` from warm_starts)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ClipscaleError("--holdout selected no rows")
    train = prep.subset(~mask)
    if train.n < prep.n_free:
        raise ClipscaleError(
            f"--holdout leaves {train.n} rows to fit, fewer than the "
            f"{prep.n_free} free parameters of {prep.law.name!r}"
        )
    choice = None
    if auto_link:
        warm = warm_starts(prep, delta=delta) if warm is None else warm
        choice = select_link(train, delta=delta, warm=warm)
        prep, train, full = prep.with_link(choice.lam), train.with_link(choice.lam), warm.get(choice.lam)
    opt = fit_prepared(train, delta=delta, starts=_starts(train, full, delta))
    err = _errors(prep, opt.params, mask)
    out = summarize(err, prep.error[mask], prep.loss)
    out["params"] = opt.params
    if choice is not None:
        out["link"] = choice.to_dict()
    return out


def leave_one_run_out(
    prep: Prepared,
    *,
    delta: float,
    groups: np.ndarray | None = None,
    full: Optimum | None = None,
    auto_link: bool = False,
    warm: Warm | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Refit without each run in turn and predict its points. With `auto_link` each fold chooses its
    link on its own training rows (`links`: how often each was chosen). `progress`: rate-limited
    `leave-one-run-out done/total` lines (clipscale.progress.Ticker)."""
    idx, n_groups = group_index(groups, prep.n)
    if n_groups < 2:
        raise ClipscaleError("leave-one-run-out needs at least two runs")
    err = np.empty(prep.n)
    chosen: dict[str, int] = {}
    if auto_link and warm is None:
        warm = warm_starts(prep, delta=delta)
    ticker = Ticker(progress, n_groups, what="leave-one-run-out")
    for g in range(n_groups):
        ticker.tick(g)
        held = idx == g
        train, scored, start = prep.subset(~held), prep, full
        if train.n < prep.n_free:
            raise ClipscaleError(f"leave-one-run-out: {train.n} points left, fewer than the parameters")
        if auto_link:
            lam = select_link(train, delta=delta, warm=warm).lam
            chosen[f"{lam:g}"] = chosen.get(f"{lam:g}", 0) + 1
            train, scored, start = train.with_link(lam), prep.with_link(lam), warm.get(lam)
        opt = fit_prepared(train, delta=delta, starts=_starts(train, start, delta))
        err[held] = _errors(scored, opt.params, held)
    ticker.finish()
    out = summarize(err, prep.error, prep.loss)
    if auto_link:
        out["links"] = chosen
    return out


def validate_fit(
    prep: Prepared,
    *,
    delta: float,
    link: str | float | None = "error",
    holdout_mask: np.ndarray | None = None,
    loo: bool = False,
    groups: np.ndarray | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The `holdout` and/or `loo` checks of one fit (`prep` on the scale of E), with the same `link`
    as the fit: a given one is used as it is, `auto` is chosen again on each fold's training rows.
    `progress` gets the leave-one-run-out folds' done/total lines."""
    lam = parse_link(link)
    out: dict[str, Any] = {}
    if holdout_mask is None and not loo:
        return out
    auto = lam is None
    linked = prep if auto else prep.with_link(lam)
    warm = warm_starts(prep, delta=delta) if auto else None
    full = None if auto else fit_prepared(linked, delta=delta)
    if holdout_mask is not None:
        out["holdout"] = holdout(linked, holdout_mask, delta=delta, full=full, auto_link=auto, warm=warm)
    if loo:
        out["loo"] = leave_one_run_out(
            linked, delta=delta, groups=groups, full=full, auto_link=auto, warm=warm, progress=progress
        )
    return out
