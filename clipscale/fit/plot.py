"""Figures in the style of the paper's Figure 1: log-log points, fitted lines, a bootstrap CI band,
dashed extrapolation beyond the data, the formula in the legend. matplotlib with the Agg backend
(no display needed), imported inside functions so the CLI starts fast.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.result import FitResult
from clipscale.io import atomic_write_bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def formula_label(name: str, fit: FitResult) -> str:
    p = fit.params
    if fit.law in ("power", "frontier"):
        return f"{name}: E = {p['A']:.3g}·C^{p['alpha']:.3f}"
    return f"{name}: " + ", ".join(f"{k}={v:.3g}" for k, v in p.items())


def draw_power_fit(
    ax: Any,
    x: np.ndarray,
    y: np.ndarray,
    fit: FitResult,
    label: str,
    color: str,
    x_max: float | None = None,
    marker: str = "o",
) -> None:
    """Points, solid line over the data, dashed extrapolation to x_max, CI band from bootstrap samples."""
    ax.scatter(x, y, color=color, marker=marker, s=30, alpha=0.8)
    if fit.frontier_points:  # the points the law went through, ringed
        fp = fit.frontier_points
        ax.scatter(fp["C"], fp["y"], s=70, facecolors="none", edgecolors="k", linewidths=0.8)
    lo, hi = float(x.min()), float(x.max())
    xs = np.geomspace(lo, hi, 100)
    ax.plot(xs, fit.predict(C=xs), color=color, label=formula_label(label, fit))
    xe = np.geomspace(hi, max(x_max or hi, hi), 50)
    if x_max and x_max > hi:
        ax.plot(xe, fit.predict(C=xe), color=color, linestyle="--")
    xb = np.geomspace(lo, max(x_max or hi, hi), 150)
    draw_band(ax, xb, fit, {"C": xb}, color, alpha=0.15)


def draw_band(
    ax: Any, x: np.ndarray, fit: FitResult, inputs: dict[str, np.ndarray], color: Any, alpha: float
) -> None:
    """95 % band of the predictions at `inputs` over the bootstrap refits, drawn at `x` (none without)."""
    if fit.bootstrap_params:
        lo, hi = np.percentile(fit.predict_samples(**inputs), [2.5, 97.5], axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, linewidth=0)


FIGURE_FORMATS = (".png", ".svg", ".pdf")


def check_figure_path(path: str | Path, option: str = "--plot") -> Path:
    """Checked before any fitting, so a typo in the figure's name does not cost the fit."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ClipscaleError(
            f"{option} {str(path)!r}: a figure is written as {', '.join(FIGURE_FORMATS)}; "
            f"got {path.suffix or 'no extension'!r}"
        )
    return path


def save_figure(fig: Any, path: Path, *, tight: bool = True) -> None:
    """Written whole or not at all (atomic rename), in the format its extension names."""
    import io

    path = check_figure_path(path, option="figure")
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lower().lstrip("."), bbox_inches="tight" if tight else None, dpi=120)
    atomic_write_bytes(path, buf.getvalue())


MARKERS = "os^Dv<>ph*"


def draw_multi_input_fit(
    ax: Any, fit: FitResult, inputs: dict[str, np.ndarray], y: np.ndarray, extend: float = 3.0
) -> None:
    """Laws of N and D (or N, U, S) on a compute axis x = N·D: one curve per model size (and unique-data
    size) over samples, solid across its runs, dashed up to `extend`× further, CI band from the bootstrap.
    Colour is model size, marker is unique data."""
    from clipscale.fit.laws import get_law

    dkey = "S" if "S" in get_law(fit.law).inputs else "D"
    n, d = inputs["N"], inputs[dkey]
    u = inputs.get("U")
    u = np.full(n.shape, np.nan) if u is None else u
    sizes, uniques = np.unique(n), np.unique(u)
    colors = _size_colors(sizes.size)
    for i, ni in enumerate(sizes):
        for j, ui in enumerate(uniques):
            sel = (n == ni) & ((u == ui) | (np.isnan(u) & np.isnan(ui)))
            if sel.any():
                marker = MARKERS[j % len(MARKERS)]
                _draw_series(ax, fit, ni, ui, dkey, d[sel], y[sel], colors[i], marker, extend)
    _multi_input_legend(ax, fit, sizes, uniques, colors)
    ax.set_xlabel(f"N·{dkey} (compute)")


def _size_colors(count: int) -> list[Any]:
    import matplotlib

    if count <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(count)]
    return [matplotlib.colormaps["viridis"](0.9 * i / (count - 1)) for i in range(count)]


def _draw_series(
    ax: Any,
    fit: FitResult,
    n: float,
    u: float,
    dkey: str,
    d: np.ndarray,
    y: np.ndarray,
    color: Any,
    marker: str,
    extend: float,
) -> None:
    """One (model size, unique data) series: points, the law solid over them, dashed beyond, band."""
    ax.scatter(n * d, y, color=color, marker=marker, s=30, alpha=0.85)
    ds = np.geomspace(d.min(), d.max() * extend, 80)
    kw: dict[str, np.ndarray] = {"N": np.full(ds.shape, n), dkey: ds}
    if not np.isnan(u):
        kw["U"] = np.full(ds.shape, u)
    pred = fit.predict(**kw)
    inside = ds <= d.max() * (1 + 1e-9)
    ax.plot(n * ds[inside], pred[inside], color=color, linewidth=1)
    edge = max(int(inside.sum()) - 1, 0)
    ax.plot(n * ds[edge:], pred[edge:], color=color, linewidth=1, linestyle="--")
    draw_band(ax, n * ds, fit, kw, color, alpha=0.12)


def _multi_input_legend(
    ax: Any, fit: FitResult, sizes: np.ndarray, uniques: np.ndarray, colors: list[Any]
) -> None:
    """Below the axes: the formula and fitted values as the title, one entry per size and per U."""
    handles = [ax.scatter([], [], color=c, marker="o", label=f"N = {v:.4g}") for c, v in zip(colors, sizes)]
    if not np.isnan(uniques).all():
        handles += [
            ax.scatter([], [], color="grey", marker=MARKERS[j % len(MARKERS)], label=f"U = {v:.3g}")
            for j, v in enumerate(uniques)
        ]
    params = textwrap.fill(", ".join(f"{k}={v:.3g}" for k, v in fit.params.items()), 70)
    ax.legend(
        handles=handles,
        fontsize=7,
        title=f"{textwrap.fill(fit.formula, 70)}\n{params}",
        title_fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=min(4, len(handles)),
    )


def plot_table_fits(
    path: str | Path,
    groups: list[tuple[Any, FitResult, dict[str, np.ndarray], np.ndarray]],
    x_label: str = "compute C",
    y_label: str = "error E",
) -> None:
    """`clipscale fit --plot`: laws of C draw every group on one axis; laws of N and D (or N, U, S)
    draw one panel per group on a compute axis N·D (`draw_multi_input_fit`)."""
    plt = _pyplot()
    from clipscale.fit.laws import get_law

    one_input = get_law(groups[0][1].law).inputs == ("C",)
    panels = 1 if one_input else len(groups)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(7 * cols, (5 if one_input else 6.5) * rows),
        squeeze=False,
        layout=None if one_input else "constrained",
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x_max = max(float(np.max(x["C"])) for _, _, x, _ in groups) * 3 if one_input else 0.0
    for i, (name, fit, x, y) in enumerate(groups):
        label = "fit" if name is None else str(name)
        ax = axes.flat[0 if one_input else i]
        if one_input:
            draw_power_fit(ax, x["C"], y, fit, label, colors[i % len(colors)], x_max=x_max)
            ax.legend(fontsize=8)
            ax.set_xlabel(x_label)
        else:
            draw_multi_input_fit(ax, fit, x, y)
            if name is not None:
                ax.set_title(label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(y_label)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    save_figure(fig, Path(path))
    plt.close(fig)
