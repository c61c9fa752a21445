"""IsoFLOP analysis (Hoffmann et al. 2022, approach 2): the compute-optimal model size per budget.

Per compute budget, a parabola of log y in log N through the runs of that budget gives the size N* at
its minimum; a least-squares line of log N* on log C over the budgets gives N* ∝ C^a. The data of a
run follows the table's compute convention C = k·N·D (k = 6 for LLM FLOPs with N parameters, k = 1 for
CLIP GMACs per sample × samples seen), so D* = C/(k·N*) ∝ C^b with b = 1 − a exactly; both are reported
because the literature quotes both. A budget whose best run is its smallest or largest model, whose
parabola opens downwards, or whose N* lies outside its sizes has no interior optimum: it is flagged
(`edge`) and excluded from the line. Bootstrap CIs resample runs within each budget.

Budgets are found by clustering sorted log10 C: a gap wider than `gap` dex starts a new budget, so a
table whose runs only approximately share their budgets (figures digitised by hand, rounded step
counts) still groups as intended; each budget's C is the geometric mean of its runs' C.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError
from clipscale.fit.bootstrap import CI_LEVEL
from clipscale.fit.table import column, filter_rows

MIN_SIZES = 3
DEFAULT_GAP = 0.05


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
) -> dict[str, Any]:
    for name, v in (("C", c), ("N", n), ("y", yv)):
        if np.any(~np.isfinite(v)) or np.any(v <= 0):
            raise ClipscaleError(f"isoflop {labels[name]}: every value must be a finite number > 0")
    bidx = budget_index(c, gap)
    ln, ly = np.log(n), np.log(yv)
    budgets, members = [], []
    for b in range(int(bidx.max()) + 1):
        sel = np.flatnonzero(bidx == b)
        opt = parabola_optimum(ln[sel], ly[sel])
        cb = float(np.exp(np.mean(np.log(c[sel]))))
        budgets.append(
            {
                "C": cb,
                "N_opt": opt["N_opt"],
                "y_opt": opt["y_opt"],
                "edge": opt["edge"],
                "n_runs": int(sel.size),
                "n_sizes": int(np.unique(n[sel]).size),
                "coef": opt["coef"],
            }
        )
        members.append(sel)
    good = [i for i, bd in enumerate(budgets) if not bd["edge"]]
    if len(good) < 2:
        raise ClipscaleError(
            f"isoflop: {len(good)} of {len(budgets)} compute budgets have an interior optimum (need >= 2; a "
            f"budget needs >= {MIN_SIZES} model sizes {labels['N']} with its best run not at the smallest or "
            f"largest); budgets are C values {labels['C']} within {gap} dex of each other"
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
        "budgets": budgets,
    }
    if bootstrap:
        samples, failed = _bootstrap(ln, ly, members, good, lcb, bootstrap, seed)
        lo, hi = np.percentile(samples, [50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL)])
        doc.update(
            a_ci=[float(lo), float(hi)],
            b_ci=[float(1 - hi), float(1 - lo)],
            bootstrap_ok=int(samples.size),
            bootstrap_failed=failed,
        )
    for bd in budgets:
        bd["D_opt"] = bd["C"] / (k * bd["N_opt"]) if np.isfinite(bd["N_opt"]) else float("nan")
    return doc


def _bootstrap(
    ln: np.ndarray,
    ly: np.ndarray,
    members: list[np.ndarray],
    good: list[int],
    lcb: np.ndarray,
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, int]:
    """Resample runs within each usable budget; a resample whose parabola has no interior optimum drops
    that budget; one with fewer than two budgets left is counted as failed."""
    rng = np.random.default_rng(seed)
    out, failed = [], 0
    for _ in range(n_boot):
        xs, ys = [], []
        for j, i in enumerate(good):
            sel = members[i]
            w = np.bincount(rng.integers(0, sel.size, sel.size), minlength=sel.size).astype(float)
            opt = parabola_optimum(ln[sel], ly[sel], w)
            if not opt["edge"]:
                xs.append(lcb[j])
                ys.append(np.log(opt["N_opt"]))
        if len(xs) < 2:
            failed += 1
            continue
        out.append(_slope(np.array(xs), np.array(ys))[0])
    if not out:
        raise ClipscaleError(
            f"isoflop: every one of {n_boot} bootstrap resamples left fewer than two budgets"
        )
    return np.array(out), failed


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
) -> dict[str, Any]:
    """The `clipscale isoflop --json` document.

    Without `by`: {"a", "a_ci", "b", "b_ci", "budgets": [{"C", "N_opt", "y_opt", "edge", "D_opt", "n_runs",
    "n_sizes", "coef"}], …} plus the inputs (C, N, y, where, k, error). With `by`: the same inputs plus
    "by" and "groups": [{"group": value, "a", "a_ci", "b", "b_ci", "budgets", …}], one per value of `by`
    (sorted), each analysed on its own rows; groups resample with seeds seed + i. `error=True` analyses
    1 − y (accuracy-like columns). CIs are None without bootstrap."""
    if bootstrap < 0:
        raise ClipscaleError(f"--bootstrap must be >= 0, got {bootstrap}")
    if not k > 0:
        raise ClipscaleError(f"--k must be > 0, got {k}")
    df = filter_rows(df, where)
    head: dict[str, Any] = {"C": C, "N": N, "y": y, "where": where, "k": k, "error": error, "gap": gap}
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
        )

    if by is None:
        return {**head, **one(df, seed)}
    if by not in df.columns:
        raise ClipscaleError(
            f"--by {by!r}: no such column; columns are: {', '.join(map(str, df.columns[:20]))}"
        )
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
    from clipscale.fit.plot import _pyplot

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
    fig.savefig(path, dpi=120)
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
