"""IsoFLOP analysis (Hoffmann et al. 2022, approach 2): the compute-optimal model size per budget.

Per compute budget, a parabola of log y in log N through the runs of the `window` sizes nearest (in
log N) the budget's best run gives the size N* at its minimum (Porian et al. 2024 fit a parabola to the
few sizes around the minimum: a parabola is only locally right, and sizes far from the minimum bias its
vertex; window None fits every size); a least-squares line of log N* on log C over the budgets gives
N* ∝ C^a. The data of a
run follows the table's compute convention C = k·N·D (k = 6 for LLM FLOPs with N parameters, k = 1 for
CLIP GMACs per sample × samples seen), so D* = C/(k·N*) ∝ C^b with b = 1 − a exactly; both are reported
because the literature quotes both. A budget whose best run is the smallest or largest size of the whole
ladder at that budget (or that has fewer than 3 sizes) has no interior optimum: it is flagged (`edge`) and
excluded from the line; that choice is made once, on the point estimate. Where the window's parabola has
no interior vertex (it opens downwards, or a wide window's vertex lies outside its sizes) the three sizes
around the best run are fitted instead, whose vertex is always interior (`window_used` says so).

Bootstrap CIs (`bootstrap_a`) keep every budget with its model sizes and draw the error of log N* about the
line, because resampling the runs of a three-size budget (the minimum, and the usual CLIP ladder) nearly
always loses a size and so leaves no CI or one collapsed to a point. That scatter is the measured error of
N* whatever its source (run noise, a parabola only approximately right, budgets only approximately shared),
the only one three runs a budget can show, and its variance is drawn with its own uncertainty, so that few
budgets give the wide CI they should.

Budgets are found by clustering sorted log10 C: a gap wider than `gap` dex starts a new budget, so a
table whose runs only approximately share their budgets (figures digitised by hand, rounded step
counts) still groups as intended; each budget's C is the geometric mean of its runs' C.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation.bootstrap import CI_LEVEL
from clipscale.fit.rows import check_key_column, column, filter_rows

_RANK_WARNING = getattr(getattr(np, "exceptions", np), "RankWarning", Warning)

MIN_SIZES = 3
DEFAULT_GAP = 0.05
DEFAULT_WINDOW = 7  # see docs/scaling-laws.md "isoFLOP window" and bench/bench_isoflop_window.py


def check_window(window: int | None) -> int | None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < MIN_SIZES):
        raise ClipscaleError(f"--window {window!r}: expected an integer >= {MIN_SIZES} (sizes per parabola)")
    return window


def window_rows(log_n: np.ndarray, log_y: np.ndarray, window: int | None) -> np.ndarray:
    """Rows of the `window` distinct sizes nearest (in log N) the best run (all rows when None)."""
    sizes = np.unique(log_n)
    if window is None or sizes.size <= window:
        return np.arange(log_n.size)
    best = log_n[np.argmin(log_y)]
    near = sizes[np.argsort(np.abs(sizes - best), kind="stable")[:window]]
    return np.flatnonzero(np.isin(log_n, near))


def budget_optimum(
    log_n: np.ndarray, log_y: np.ndarray, window: int | None
) -> tuple[dict[str, Any], np.ndarray]:
    """One budget: its parabola's optimum over the window, `edge` by the ladder rule, and the rows fitted."""
    sizes = np.unique(log_n)
    best = log_n[np.argmin(log_y)]
    rows = window_rows(log_n, log_y, window)
    opt = parabola_optimum(log_n[rows], log_y[rows])
    edge = bool(sizes.size < MIN_SIZES or best in (sizes[0], sizes[-1]))
    used = int(np.unique(log_n[rows]).size)
    if opt["edge"] and not edge:  # no interior vertex in this window: the three sizes around the best
        rows = window_rows(log_n, log_y, MIN_SIZES)
        opt, used = parabola_optimum(log_n[rows], log_y[rows]), MIN_SIZES
    return {**opt, "edge": edge, "window_used": used}, rows


def budget_index(c: np.ndarray, gap: float = DEFAULT_GAP) -> np.ndarray:
    """Budget number (0, 1, …, by increasing C) of each row: clusters of log10 C split at gaps > `gap`."""
    lc = np.log10(c)
    order = np.argsort(lc, kind="stable")
    new = np.concatenate([[0], (np.diff(lc[order]) > gap).astype(int)])
    idx = np.empty(c.size, int)
    idx[order] = np.cumsum(new)
    return idx


def parabola_optimum(log_n: np.ndarray, log_y: np.ndarray, w: np.ndarray | None = None) -> dict[str, Any]:
    """Weighted quadratic fit of log y in log N: N* and y* at its vertex, and whether it is an edge."""
    w = np.ones_like(log_n) if w is None else w
    keep = w > 0
    x, ly, ww = log_n[keep], log_y[keep], w[keep]
    sizes = np.unique(x)
    if sizes.size < MIN_SIZES:
        return {"N_opt": float("nan"), "y_opt": float("nan"), "edge": True, "coef": None}
    with warnings.catch_warnings():  # a resample of few distinct sizes is ill-conditioned: the vertex
        warnings.simplefilter("ignore", _RANK_WARNING)  # and edge rule below judge it, not a stray warning
        c2, c1, c0 = np.polyfit(x, ly, 2, w=np.sqrt(ww))
    best = x[np.argmin(ly)]
    edge = bool(c2 <= 0 or best in (sizes[0], sizes[-1]))
    xv = -c1 / (2 * c2) if c2 > 0 else float(best)
    if not sizes[0] < xv < sizes[-1]:  # no interior vertex: report the best size run instead
        edge, xv = True, float(best)
    return {
        "N_opt": float(np.exp(xv)),
        "y_opt": float(np.exp(c0 + c1 * xv + c2 * xv * xv)),
        "edge": edge,
        "coef": [float(c2), float(c1), float(c0)],
    }


def _slope(log_c: np.ndarray, log_n: np.ndarray) -> tuple[float, float]:
    a, icpt = np.polyfit(log_c, log_n, 1)
    return float(a), float(icpt)


def _analyse(
    c: np.ndarray,
    n: np.ndarray,
    yv: np.ndarray,
    *,
    k: float,
    bootstrap: int,
    seed: int,
    gap: float,
    labels: dict[str, str],
    window: int | None = DEFAULT_WINDOW,
) -> dict[str, Any]:
    for name, v in (("C", c), ("N", n), ("y", yv)):
        if np.any(~np.isfinite(v)) or np.any(v <= 0):
            raise ClipscaleError(f"isoflop {labels[name]}: every value must be a finite number > 0")
    bidx = budget_index(c, gap)
    ln, ly = np.log(n), np.log(yv)
    budgets, members = [], []
    for b in range(int(bidx.max()) + 1):
        sel = np.flatnonzero(bidx == b)
        opt, rows = budget_optimum(ln[sel], ly[sel], window)
        cb = float(np.exp(np.mean(np.log(c[sel]))))
        budgets.append(
            {
                "C": cb,
                "N_opt": opt["N_opt"],
                "y_opt": opt["y_opt"],
                "edge": opt["edge"],
                "n_runs": int(sel.size),
                "n_sizes": int(np.unique(n[sel]).size),
                "window_used": opt["window_used"],
                "coef": opt["coef"],
            }
        )
        members.append(sel[rows])
    good = [i for i, bd in enumerate(budgets) if not bd["edge"]]
    if len(good) < 2:
        raise ClipscaleError(
            f"isoflop: {len(good)} of {len(budgets)} compute budgets have an interior optimum (need >= 2; a "
            f"budget needs >= {MIN_SIZES} model sizes {labels['N']} with its best run not at the smallest or "
            f"largest of the ladder); budgets are C values {labels['C']} within {gap} dex of each other"
        )
    lcb = np.log([budgets[i]["C"] for i in good])
    a, icpt = _slope(lcb, np.log([budgets[i]["N_opt"] for i in good]))
    doc: dict[str, Any] = {
        "a": a,
        "a_ci": None,
        "b": 1.0 - a,
        "b_ci": None,
        "N_opt_coef": float(np.exp(icpt)),
        "n_budgets_used": len(good),
        "window": window,
        "budgets": budgets,
    }
    if bootstrap:
        doc.update(_ci(bootstrap_a(ln, ly, members, good, lcb, bootstrap, seed)))
    for bd in budgets:
        bd["D_opt"] = bd["C"] / (k * bd["N_opt"]) if np.isfinite(bd["N_opt"]) else float("nan")
    return doc


def _design(log_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares map from log y to the parabola's (c2, c1, c0), and the leverages of its runs."""
    x = np.vander(log_n, 3)
    pinv = np.linalg.pinv(x)
    return pinv, np.einsum("ij,ji->i", x, pinv)


def _residual_pool(ln: np.ndarray, ly: np.ndarray, members: list[np.ndarray], good: list[int]) -> np.ndarray:
    """Leverage-adjusted, centred residuals of log y about the usable budgets' parabolas (Davison & Hinkley
    1997, eq. 6.9); empty when no parabola has a residual degree of freedom (e.g. three runs each)."""
    pool = []
    for i in good:
        sel = members[i]
        pinv, lev = _design(ln[sel])
        if sel.size - np.linalg.matrix_rank(pinv) < 1:
            continue
        r = ly[sel] - np.vander(ln[sel], 3) @ (pinv @ ly[sel])
        pool.append(r / np.sqrt(np.clip(1.0 - lev, 1e-12, None)))
    return np.concatenate(pool) - np.concatenate(pool).mean() if pool else np.empty(0)


def _vertices(
    ln: np.ndarray,
    ly: np.ndarray,
    members: list[np.ndarray],
    good: list[int],
    pool: np.ndarray,
    n: int,
    rng: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, budgets) log N* from each budget's parabola refitted to fitted + resampled pooled residuals,
    whether the resampled parabola has a minimum at all, and whether that minimum left the budget's sizes."""
    out = np.empty((n, len(good)))
    ok, outside = np.zeros((n, len(good)), bool), np.zeros((n, len(good)), bool)
    for j, i in enumerate(good):
        sel = members[i]
        x = ln[sel]
        pinv, _ = _design(x)
        fit = np.vander(x, 3) @ (pinv @ ly[sel])
        noise = rng.choice(pool, size=(n, sel.size)) if pool.size else np.zeros((n, sel.size))
        c2, c1, _ = pinv @ (fit + noise).T
        ok[:, j] = c2 > 0
        xv = -c1 / (2 * np.where(ok[:, j], c2, 1.0))
        out[:, j] = xv
        outside[:, j] = (xv <= x.min()) | (xv >= x.max())
    return out, ok, outside & ok


def bootstrap_a(
    ln: np.ndarray,
    ly: np.ndarray,
    members: list[np.ndarray],
    good: list[int],
    lcb: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Bootstrap of the exponent a on the budgets chosen by the point estimate, each keeping its sizes.

    With G >= 3 usable budgets (`line`): each resample adds to every budget's log N* normal scatter whose
    variance is the line's residual variance drawn from its scaled inverse χ² (G − 2 degrees of freedom), and
    refits the line; this is the t-interval of the slope, with b = 1 − a alike. With two budgets the line has
    no residual, so (`parabola residuals`) each budget's parabola is refitted to its fitted values plus
    residuals drawn from the pooled leverage-adjusted parabola residuals; a resample in which a parabola
    has no minimum is dropped and counted (`bootstrap_failed`), one whose vertex leaves its budget's sizes
    kept and counted (`bootstrap_edge`). Without either (two budgets of exactly three runs) there is no CI
    (`ci_note`)."""
    rng = np.random.default_rng(seed)
    g = len(good)
    xc = lcb - lcb.mean()
    weights = xc / (xc @ xc)  # slope = weights @ log N*
    point = np.array([np.log(parabola_optimum(ln[members[i]], ly[members[i]])["N_opt"]) for i in good])
    if g > 2:
        resid = point - (point @ weights) * xc - point.mean()
        rss = float(resid @ resid)
        sd = np.sqrt(rss / rng.chisquare(g - 2, n_boot))
        lv = point + sd[:, None] * rng.standard_normal((n_boot, g))
        return {
            "samples": lv @ weights,
            "bootstrap_method": "line",
            "bootstrap_line_sd": float(np.sqrt(rss / (g - 2))),
            "bootstrap_failed": 0,
        }
    pool = _residual_pool(ln, ly, members, good)
    if not pool.size:
        return {
            "bootstrap_method": "none",
            "ci_note": "no CI: two usable budgets, each with as many runs as parabola coefficients, hold no "
            "estimate of the noise",
        }
    lv, ok, outside = _vertices(ln, ly, members, good, pool, n_boot, rng)
    keep = ok.all(axis=1)
    return {
        "samples": lv[keep] @ weights,
        "bootstrap_method": "parabola residuals",
        "bootstrap_pooled_residuals": int(pool.size),
        "bootstrap_failed": int((~keep).sum()),
        "bootstrap_edge": int(outside[keep].any(axis=1).sum()),
    }


def _ci(boot: dict[str, Any]) -> dict[str, Any]:
    """The JSON fields of a bootstrap: percentile CIs of a and of b = 1 − a, and its counts."""
    samples = boot.pop("samples", None)
    if samples is None or not samples.size:
        boot.setdefault("ci_note", "no CI: in every resample a budget's parabola had no minimum")
        return boot
    lo, hi = np.percentile(samples, [50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL)])
    return {
        **boot,
        "a_ci": [float(lo), float(hi)],
        "b_ci": [float(1 - hi), float(1 - lo)],
        "bootstrap_ok": int(samples.size),
    }


def isoflop(
    df: pd.DataFrame,
    *,
    C: str,
    N: str,
    y: str,
    by: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    where: str | None = None,
    k: float = 1.0,
    error: bool = False,
    gap: float = DEFAULT_GAP,
    window: int | None = DEFAULT_WINDOW,
) -> dict[str, Any]:
    """The `clipscale isoflop --json` document.

    Without `by`: {"a", "a_ci", "b", "b_ci", "budgets": [{"C", "N_opt", "y_opt", "edge", "D_opt", "n_runs",
    "n_sizes", "coef"}], …} plus the inputs (C, N, y, where, k, error). With `by`: the same inputs plus
    "by" and "groups": [{"group": value, "a", "a_ci", "b", "b_ci", "budgets", …}], one per value of `by`
    (sorted), each analysed on its own rows; groups resample with seeds seed + i. `error=True` analyses
    1 − y (accuracy-like columns). CIs are None without bootstrap. `window`: the sizes nearest each
    budget's best run its parabola goes through (None: every size)."""
    check_window(window)
    if bootstrap < 0:
        raise ClipscaleError(f"--bootstrap must be >= 0, got {bootstrap}")
    if not k > 0:
        raise ClipscaleError(f"--k must be > 0, got {k}")
    df = filter_rows(df, where)
    head: dict[str, Any] = {"C": C, "N": N, "y": y, "where": where, "k": k, "error": error, "gap": gap,
                            "window": window}
    labels = {"C": f"--C {C!r}", "N": f"--N {N!r}", "y": f"--y {y!r}" + (" (as 1 - y)" if error else "")}

    def one(rows: pd.DataFrame, s: int) -> dict[str, Any]:
        yv = column(rows, y, "y")
        return _analyse(
            column(rows, C, "C"),
            column(rows, N, "N"),
            1.0 - yv if error else yv,
            k=k,
            bootstrap=bootstrap,
            seed=s,
            gap=gap,
            labels=labels,
            window=window,
        )

    if by is None:
        return {**head, **one(df, seed)}
    check_key_column(df, by, "--by")
    groups = []
    for i, (key, rows) in enumerate(df.groupby(by, sort=True)):
        try:
            groups.append({"group": key.item() if hasattr(key, "item") else key, **one(rows, seed + i)})
        except ClipscaleError as exc:
            raise ClipscaleError(f"--by {by!r} group {key!r}: {exc}") from None
    return {**head, "by": by, "groups": groups}


def plot_isoflop(doc: dict[str, Any], df: pd.DataFrame, path: str | Path) -> None:
    """Figure of an `isoflop` document: per group, y against N per budget with its parabola and N*
    (edge budgets hollow), and N* against C with the fitted line. `df` is the table it was computed from."""
    from clipscale.fit.plot import _pyplot, save_figure

    plt = _pyplot()
    groups = doc.get("groups", [{"group": None, **doc}])
    rows = filter_rows(df, doc.get("where"))
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4.2 * len(groups)), squeeze=False)
    for (ax_y, ax_n), g in zip(axes, groups, strict=True):
        sub = rows if g["group"] is None else rows[rows[doc["by"]] == g["group"]]
        _draw_budgets(ax_y, g, sub, doc)
        _draw_line(ax_n, g)
        if g["group"] is not None:
            ax_y.set_title(f"{doc['by']} = {g['group']}")
    fig.tight_layout()
    save_figure(fig, Path(path), tight=False)
    plt.close(fig)


def _draw_budgets(ax: Any, g: dict[str, Any], rows: pd.DataFrame, doc: dict[str, Any]) -> None:
    c, n, yv = column(rows, doc["C"], "C"), column(rows, doc["N"], "N"), column(rows, doc["y"], "y")
    yv = 1.0 - yv if doc.get("error") else yv
    bidx = budget_index(c, doc.get("gap", DEFAULT_GAP))
    colours = [f"C{i % 10}" for i in range(len(g["budgets"]))]
    for i, bd in enumerate(g["budgets"]):
        sel = bidx == i
        label = (
            f"C = {bd['C']:.3g}" + (" (edge)" if bd["edge"] else "") if bd["n_sizes"] >= MIN_SIZES else None
        )
        ax.scatter(n[sel], yv[sel], s=14, color=colours[i], label=label)
        if bd["coef"] is not None:
            xs = np.linspace(np.log(n[sel].min()), np.log(n[sel].max()), 60)
            ax.plot(np.exp(xs), np.exp(np.polyval(bd["coef"], xs)), color=colours[i], lw=1)
        if np.isfinite(bd["N_opt"]):
            face = "none" if bd["edge"] else colours[i]
            ax.scatter(
                [bd["N_opt"]], [bd["y_opt"]], marker="*", s=120, facecolors=face, edgecolors=colours[i]
            )
    ax.set(
        xscale="log", yscale="log", xlabel=doc["N"], ylabel=("1 - " if doc.get("error") else "") + doc["y"]
    )
    ax.legend(fontsize=7)


def _draw_line(ax: Any, g: dict[str, Any]) -> None:
    used = [bd for bd in g["budgets"] if not bd["edge"]]
    cs = np.array([bd["C"] for bd in used])
    ax.scatter(cs, [bd["N_opt"] for bd in used], color="k", s=20, label="N* per budget")
    xs = np.geomspace(cs.min(), cs.max(), 50)
    ci = f" [{g['a_ci'][0]:.3f}, {g['a_ci'][1]:.3f}]" if g.get("a_ci") else ""
    ax.plot(xs, g["N_opt_coef"] * xs ** g["a"], color="C3", label=f"N* ∝ C^{g['a']:.3f}{ci}")
    ax.set(xscale="log", yscale="log", xlabel="compute C", ylabel="N*")
    ax.legend(fontsize=8)
