"""Figures in the style of the paper's Figure 1: log-log points, fitted lines, a bootstrap CI band,
dashed extrapolation beyond the data, the formula in the legend. matplotlib with the Agg backend
(no display needed), imported inside functions so the CLI starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipscale.fit.result import FitResult, fit_law
from clipscale.io import atomic_write_bytes, atomic_write_text


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
    lo, hi = float(x.min()), float(x.max())
    xs = np.geomspace(lo, hi, 100)
    ax.plot(xs, fit.predict(C=xs), color=color, label=formula_label(label, fit))
    xe = np.geomspace(hi, max(x_max or hi, hi), 50)
    if x_max and x_max > hi:
        ax.plot(xe, fit.predict(C=xe), color=color, linestyle="--")
    if fit.bootstrap_params:
        xb = np.geomspace(lo, max(x_max or hi, hi), 150)
        samples = fit.predict_samples(C=xb)
        ax.fill_between(
            xb,
            np.percentile(samples, 2.5, axis=0),
            np.percentile(samples, 97.5, axis=0),
            color=color,
            alpha=0.15,
            linewidth=0,
        )


def save_figure(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", bbox_inches="tight", dpi=120)
    atomic_write_bytes(path, buf.getvalue())


def plot_table_fits(
    path: str | Path,
    groups: list[tuple[Any, FitResult, np.ndarray, np.ndarray]],
    x_label: str = "compute C",
    y_label: str = "error E",
) -> None:
    """`clipscale fit --plot`: one series per group. For laws of one input x is C; otherwise x is the
    first input and predictions are drawn as open markers next to the observed points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x_max = max(float(np.max(x)) for _, _, x, _ in groups) * 3
    for i, (name, fit, x, y) in enumerate(groups):
        color = colors[i % len(colors)]
        label = "fit" if name is None else str(name)
        if fit.law in ("power", "frontier"):
            draw_power_fit(ax, x, y, fit, label, color, x_max=x_max)
        else:
            ax.scatter(x, y, color=color, s=30, label=formula_label(label, fit))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, Path(path))
    plt.close(fig)


def write_reproduction_outputs(
    out: Path, doc: dict[str, Any], figures: list, joint_params: dict[str, Any], *, bootstrap: int, seed: int
) -> None:
    """Figure 1 per target (PNG and SVG) and a CSV per table."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    for target, rows, fits in figures:
        fig, ax = plt.subplots(figsize=(7, 5))
        x_max = float(rows.gmacs_total.max()) * 10
        for source, color, marker in (("openclip", "tab:orange", "o"), ("openai", "tab:blue", "*")):
            sel = rows[rows.source == source]
            fit = fits[source]
            if bootstrap:
                law = "frontier" if source == "openclip" else "power"
                fit = fit_law(
                    law, y=sel.E.to_numpy(), C=sel.gmacs_total.to_numpy(), bootstrap=bootstrap, seed=seed
                )
            name = "OpenCLIP (LAION)" if source == "openclip" else "OpenAI CLIP (WIT)"
            draw_power_fit(ax, sel.gmacs_total.to_numpy(), sel.E.to_numpy(), fit, name, color, x_max, marker)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("total compute C (GMACs)")
        ax.set_ylabel(f"{target} error E")
        ax.set_title(target)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        for ext in ("png", "svg"):
            save_figure(fig, out / f"{target.replace('/', '_')}_fig1.{ext}")
        plt.close(fig)
    atomic_write_text(out / "fits.csv", pd.DataFrame(doc["fits"]).to_csv(index=False))
    atomic_write_text(out / "predictions.csv", pd.DataFrame(doc["predictions"]).to_csv(index=False))
    mae = [{"target": k, "prediction_mae_pct": v} for k, v in doc["prediction_mae_pct"].items()]
    atomic_write_text(out / "prediction_mae.csv", pd.DataFrame(mae).to_csv(index=False))
    atomic_write_text(out / "joint.csv", pd.DataFrame(doc["joint"]).to_csv(index=False))
    jp = [{"target": t, **p} for t, p in joint_params.items()]
    atomic_write_text(out / "joint_params.csv", pd.DataFrame(jp).to_csv(index=False))
