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
                       label=f"{d}: data-constrained (> 10 repeats)")
        for f in fits:
            if f["distribution"] == d and "fit" in f:
                _draw_fit(ax, f, points[points.distribution == d].compute, color)
    ax.set(xscale="log", yscale="log", xlabel="compute C (GMACs)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _png(fig)


def _draw_fit(ax: Any, f: dict[str, Any], compute: Any, color: str) -> None:
    res = f["fit"]
    lo, hi = float(compute.min()), float(compute.max())
    far = max([p["compute"] for p in f.get("predictions", [])] + [hi])
    inside, beyond = np.geomspace(lo, hi, 50), np.geomspace(hi, far, 50)
    p = res.params
    label = f"{f['law']}: E = {p['A']:.3g}·C^{p['alpha']:.3f}"
    label += f" + {p['E_inf']:.2g}" if "E_inf" in p else ""
    ax.plot(inside, res.predict(C=inside), color=color, lw=2, label=f"{label} (R² {f['r2_log']:.2f})")
    ax.plot(beyond, res.predict(C=beyond), "--", color=color, lw=1.5)
    both = np.concatenate([inside, beyond])
    samples = res.predict_samples(C=both)
    if len(samples):
        band = np.nanpercentile(samples, [2.5, 97.5], axis=0)
        ax.fill_between(both, band[0], band[1], color=color, alpha=0.15, lw=0)


def isoflop_figure(optimal: list[dict[str, Any]], points: Any, *, title: str) -> bytes:
    """Left: error vs model size per isoFLOP group; right: compute-optimal size vs compute."""
    fig, (left, right) = _figure(5.0, 3.9, ncols=2)
    dists = sorted({o["distribution"] for o in optimal})
    for o in optimal:
        color = _color(dists, o["distribution"])
        mine = points.distribution == o["distribution"]
        sub = points[mine & points.compute_group.notna() & ~points.constrained]
        levels = sorted(sub.compute_group.unique())
        for k, level in enumerate(levels):
            g = sub[sub.compute_group == level].sort_values("params")
            left.plot(g.params, g.error, "-", marker=MARKERS[k % 6], color=color,
                      alpha=0.4 + 0.6 * (k + 1) / len(levels), label=f"{o['distribution']} C={level:.3g}")
        c = np.array([g["compute"] for g in o["groups"]])
        n = np.array([g["n_opt"] for g in o["groups"]])
        right.scatter(c, n, color=color, s=50, label=o["distribution"])
        if "exponent" in o:
            xs = np.geomspace(c.min(), c.max(), 20)
            right.plot(xs, o["coefficient"] * xs ** o["exponent"], color=color,
                       label=f"N_opt ∝ C^{o['exponent']:.2f}")
    left.set(xscale="log", yscale="log", xlabel="model parameters (M)", ylabel="error",
             title="isoFLOP groups (equal compute)")
    right.set(xscale="log", yscale="log", xlabel="compute C (GMACs)", ylabel="compute-optimal params (M)",
              title=title)
    left.legend(fontsize=6)
    right.legend(fontsize=7)
    from matplotlib.ticker import NullFormatter

    for ax in (left, right):  # minor tick labels of short log x axes overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
    return _png(fig)
