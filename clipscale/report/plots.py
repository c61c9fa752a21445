"""The report's figures, drawn with matplotlib's object API (no pyplot state) and returned as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
MARKERS = {0: "o", 1: "s", 2: "^", 3: "D", 4: "v", 5: "P"}


def _figure(width: float = 6.4, height: float = 4.2, ncols: int = 1) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _color(names: list[str], name: str) -> str:
    return COLORS[sorted(names).index(name) % len(COLORS)]


def grid_figure(runs: Any) -> bytes:
    """Every run at its (compute, params): the design of the study at a glance."""
    fig, (ax,) = _figure()
    dists = sorted(runs.distribution.unique())
    sizes = sorted(runs.data_size.unique())
    for i, d in enumerate(dists):
        shift = 1.0 + 0.05 * i  # side by side, not on top of each other, when distributions share cells
        for j, size in enumerate(sizes):
            sub = runs[(runs.distribution == d) & (runs.data_size == size)]
            if len(sub):
                ax.scatter(sub.compute * shift, sub.params, color=_color(dists, d), marker=MARKERS[j % 6],
                           s=60, alpha=0.75, label=f"{d}, {size:,} unique samples")
    ax.set(xscale="log", yscale="log", xlabel="compute C (GMACs = GMACs/sample × samples seen)",
           ylabel="model parameters (M)", title="The grid: one marker per run")
    ax.legend(fontsize=8)
    return _png(fig)


def learning_curves_figure(curves: dict[str, Any], runs: Any) -> bytes:
    """Training loss against samples seen, one panel per distribution."""
    dists = sorted(runs.distribution.unique())
    models = sorted(runs.model.unique())
    fig, axes = _figure(5.0, 3.8, ncols=max(1, len(dists)))
    for ax, d in zip(axes, dists):
        for _, run in runs[runs.distribution == d].iterrows():
            curve = curves.get(run.run_id)
            if curve is None or not len(curve):
                continue
            style = "-" if run.data_size == runs.data_size.max() else ":"
            ax.plot(curve.samples_seen, curve.loss, style, color=_color(models, run.model), lw=1.2, alpha=0.8)
        ax.set(xscale="log", yscale="log", xlabel="samples seen", ylabel="training loss", title=d)
        for m in models:
            ax.plot([], [], color=_color(models, m), label=m)
        ax.plot([], [], "k:", label="smaller data size")
        ax.legend(fontsize=7)
    return _png(fig)


def scaling_figure(points: Any, curves: Any, fits: list[dict[str, Any]], *, title: str, ylabel: str) -> bytes:
    """Error vs compute: final points per run, fitted law with CI band, dashed extrapolation."""
    fig, (ax,) = _figure(7.0, 4.6)
    dists = sorted(points.distribution.unique())
    for d in dists:
        color = _color(dists, d)
        inter = curves[(curves.distribution == d)]
        ax.scatter(inter.compute, inter.error, color=color, s=8, alpha=0.25)
        full = points[(points.distribution == d) & ~points.constrained]
        cons = points[(points.distribution == d) & points.constrained]
        ax.scatter(full.compute, full.error, color=color, s=40, label=f"{d}: final checkpoints")
        if len(cons):
            ax.scatter(cons.compute, cons.error, facecolors="none", edgecolors=color, s=60, marker="s",
                       label=f"{d}: data-constrained (over max_passes)")
        for f in fits:
            if f["distribution"] == d and "fit" in f and set(f["fit"].input_ranges) == {"C"}:
                _draw_fit(ax, f, points[points.distribution == d].compute, color)
    ax.set(xscale="log", yscale="log", xlabel="compute C (GMACs)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _png(fig)


def _draw_fit(ax: Any, f: dict[str, Any], compute: Any, color: str) -> None:
    res = f["fit"]
    lo, hi = float(compute.min()), float(compute.max())
    far = max([p["compute"] for p in f.get("predictions", [])] + [hi])
    inside, beyond = np.geomspace(lo, hi, 50), np.geomspace(hi, far, 50)
    values = ", ".join(f"{k} {v:.3g}" for k, v in res.params.items())
    label = f"{f['law']}" + (f" ({f['frontier']})" if f.get("frontier", "none") != "none" else "")
    label = f"{label}: {values} (R² {f['r2_log']:.2f})"
    ax.plot(inside, res.predict(C=inside), color=color, lw=2, label=label)
    ax.plot(beyond, res.predict(C=beyond), "--", color=color, lw=1.5)
    both = np.concatenate([inside, beyond])
    samples = res.predict_samples(C=both)
    if len(samples):
        band = np.nanpercentile(samples, [2.5, 97.5], axis=0)
        ax.fill_between(both, band[0], band[1], color=color, alpha=0.15, lw=0)


def isoflop_figure(isoflop: list[dict[str, Any]], points: Any, *, title: str,
                   n_column: str = "params") -> bytes:
    """Left: error vs model size per budget with each budget's N_opt; right: N_opt vs compute, N_opt ∝ C^a.
    Model size is the results-table column the analysis used (fits.json settings.inputs.N)."""
    fig, (left, right) = _figure(5.0, 3.9, ncols=2)
    dists = sorted({o["distribution"] for o in isoflop})
    for o in isoflop:
        color = _color(dists, o["distribution"])
        mine = points.distribution == o["distribution"]
        sub = points[mine & points.compute_group.notna() & ~points.constrained]
        levels = sorted(sub.compute_group.unique())
        for k, level in enumerate(levels):
            g = sub[sub.compute_group == level].sort_values(n_column)
            left.plot(g[n_column], g.error, "-", marker=MARKERS[k % 6], color=color,
                      alpha=0.4 + 0.6 * (k + 1) / len(levels), label=f"{o['distribution']} C={level:.3g}")
        inside = [b for b in o.get("budgets", []) if not b.get("edge") and b.get("N_opt") is not None]
        if inside:
            left.scatter([b["N_opt"] for b in inside], [b["y_opt"] for b in inside], marker="*", s=110,
                         color=color, zorder=3)
            right.scatter([b["C"] for b in inside], [b["N_opt"] for b in inside], marker="*", s=90,
                          color=color, label=f"{o['distribution']}: parabola vertex")
        edges = {float(b["C"]) for b in o.get("budgets", []) if b.get("edge")}
        best = [g.loc[g.error.idxmin()] for level, g in sub.groupby("compute_group")
                if float(level) in edges]
        if best:  # no vertex inside the ladder: show where the best measured size is, not an extrapolation
            right.scatter([r.compute_group for r in best], [r[n_column] for r in best], marker="X", s=60,
                          facecolors="none", edgecolors=color,
                          label=f"{o['distribution']}: minimum at an edge (best size; excluded)")
        if o.get("a") is not None and len(inside) >= 2:
            c = np.array([b["C"] for b in inside])
            n = np.array([b["N_opt"] for b in inside])
            xs = np.geomspace(c.min(), c.max(), 20)
            coef = np.exp(np.mean(np.log(n) - o["a"] * np.log(c)))  # the line through the points' centre
            right.plot(xs, coef * xs ** o["a"], color=color, label=f"N_opt ∝ C^{o['a']:.2f}")
    left.set(xscale="log", yscale="log", xlabel=f"model parameters (M, {n_column})", ylabel="error",
             title="isoFLOP groups (equal compute); ★ N_opt")
    right.set(xscale="log", yscale="log", xlabel="compute C (GMACs)", ylabel="compute-optimal params (M)",
              title=title)
    left.legend(fontsize=6)
    right.legend(fontsize=7)
    from matplotlib.ticker import NullFormatter

    for ax in (left, right):  # minor tick labels of short log x axes overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
    return _png(fig)
