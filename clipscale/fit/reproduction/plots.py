"""The reproduction's figures and tables: Figure 1 (frontier and OpenAI power law per target, bootstrap
band) and the joint law's figure, as PNG and SVG, and a CSV per table of `reproduce_cherti2023`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from clipscale.fit.plot import _pyplot, draw_multi_input_fit, draw_power_fit, save_figure
from clipscale.fit.reproduction.paper import joint_inputs
from clipscale.fit.result import fit_law
from clipscale.io import atomic_write_text


def _joint_figure(
    out: Path, target: str, rows: pd.DataFrame, *, bootstrap: int, seed: int, link: str | float | None
) -> None:
    """The joint law over the 29 OpenCLIP runs: one curve per (model, dataset) over samples seen."""
    plt = _pyplot()
    ours = rows[rows.source == "openclip"]
    inputs = joint_inputs(ours)
    fit = fit_law("joint", y=ours.E.to_numpy(), bootstrap=bootstrap, seed=seed, link=link, **inputs)
    fig, ax = plt.subplots(figsize=(7, 5))
    draw_multi_input_fit(ax, fit, inputs, ours.E.to_numpy())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per sample × samples seen")
    ax.set_ylabel(f"{target} error E")
    ax.set_title(f"{target}: joint law, OpenCLIP on LAION-80M/400M/2B")
    ax.grid(True, which="both", alpha=0.3)
    for ext in ("png", "svg"):
        save_figure(fig, out / f"{target.replace('/', '_')}_joint.{ext}")
    plt.close(fig)


def write_reproduction_outputs(
    out: Path,
    doc: dict[str, Any],
    figures: list,
    joint_params: dict[str, Any],
    *,
    bootstrap: int,
    seed: int,
    links: dict[str, str] | None = None,
    link: str | float | None = "error",
) -> None:
    """Figure 1 and the joint law's figure per target (PNG and SVG), and a CSV per table; `links`: the
    scale each target's joint law was fitted on (joint_links.csv; clipscale.fit.estimation.link)."""
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
        _joint_figure(out, target, rows, bootstrap=bootstrap, seed=seed, link=link)
    atomic_write_text(out / "fits.csv", pd.DataFrame(doc["fits"]).to_csv(index=False))
    atomic_write_text(out / "predictions.csv", pd.DataFrame(doc["predictions"]).to_csv(index=False))
    mae = [{"target": k, "prediction_mae_pct": v} for k, v in doc["prediction_mae_pct"].items()]
    atomic_write_text(out / "prediction_mae.csv", pd.DataFrame(mae).to_csv(index=False))
    atomic_write_text(out / "joint.csv", pd.DataFrame(doc["joint"]).to_csv(index=False))
    jp = [{"target": t, **p} for t, p in joint_params.items()]
    atomic_write_text(out / "joint_params.csv", pd.DataFrame(jp).to_csv(index=False))
    if links:
        rows = [{"target": t, "link": name} for t, name in links.items()]
        atomic_write_text(out / "joint_links.csv", pd.DataFrame(rows).to_csv(index=False))
