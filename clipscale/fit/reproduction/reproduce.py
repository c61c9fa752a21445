"""`clipscale reproduce cherti2023`: the paper's scaling analysis from its published tables.

E = 1 - acc1 (classification), 1 - image_retrieval_recall@5 (retrieval), 1 - mAP
(voc2007_multilabel); C = gmacs_total. Per target: the frontier law over the 29 OpenCLIP runs and a
power law over the 3 OpenAI runs; the prediction table for the paper's archs x samples seen; and
the joint law's leave-one-run-out and H/14 + g/14 extrapolation errors next to the frontier's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError
from clipscale.fit.estimation.link import link_name, parse_link
from clipscale.fit.estimation.points import prepare
from clipscale.fit.estimation.validate import validate_fit
from clipscale.fit.laws import get_law
from clipscale.fit.reproduction.paper import (
    DEFAULT_TARGETS,
    HOLDOUT_ARCHS,
    PREDICTION_ARCHS,
    PREDICTION_TARGETS,
    SAMPLES,
    UNIQUE,
    joint_inputs,
    load_paper,
    target_rows,
)
from clipscale.fit.result import FitResult, fit_law


def paper_fits(rows: pd.DataFrame, target: str) -> tuple[list[dict[str, Any]], dict[str, FitResult]]:
    out, fits = [], {}
    for source, law in (("openclip", "frontier"), ("openai", "power")):
        sel = rows[rows.source == source]
        fit = fit_law(law, y=sel.E.to_numpy(), C=sel.gmacs_total.to_numpy())
        fits[source] = fit
        out.append(
            {
                "target": target,
                "source": source,
                "law": law,
                "A": fit.params["A"],
                "alpha": fit.params["alpha"],
                "n": len(sel),
            }
        )
    return out, fits


def prediction_table(rows: pd.DataFrame, arch_info: pd.DataFrame, fit: FitResult, target: str) -> list[dict]:
    gmacs = dict(zip(arch_info["model"], arch_info["gmacs"], strict=True))
    ours = rows[rows.source == "openclip"]
    table = []
    for arch in PREDICTION_ARCHS:
        if arch not in gmacs:
            raise ClipscaleError(f"arch_info.csv has no row for {arch}")
        for label, samples in SAMPLES.items():
            pred = 100.0 * (1.0 - float(fit.predict(C=np.array([gmacs[arch] * samples]))[0]))
            match = ours[(ours.arch == arch) & (ours.samples_seen_pretty == label)]
            actual = float(100.0 * (1.0 - match.E.min())) if len(match) else None
            table.append(
                {
                    "target": target,
                    "arch": arch,
                    "samples_seen": int(samples),
                    "predicted_pct": pred,
                    "actual_pct": actual,
                }
            )
    return table


def prediction_mae(table: list[dict]) -> float:
    diffs = [abs(r["predicted_pct"] - r["actual_pct"]) for r in table if r["actual_pct"] is not None]
    return float(np.mean(diffs))


def joint_checks(
    rows: pd.DataFrame, target: str, delta: float = 1e-3, link: str | float | None = "error"
) -> dict[str, Any]:
    """LOO and H/14+g/14 extrapolation MAE (accuracy points) of the joint law and of the frontier law;
    with `link` auto the link is chosen inside every fold (clipscale.fit.estimation.link)."""
    ours = rows[rows.source == "openclip"].reset_index(drop=True)
    if ours.upstream_dataset.isin(UNIQUE).sum() != len(ours):
        raise ClipscaleError(
            f"unknown upstream_dataset in {sorted(set(ours.upstream_dataset) - set(UNIQUE))}"
        )
    y = ours.E.to_numpy()
    mask = ours.arch.isin(HOLDOUT_ARCHS).to_numpy()
    out: dict[str, Any] = {"target": target}
    inputs = {
        "joint": joint_inputs(ours),
        "frontier": {"C": ours.gmacs_total.to_numpy()},
    }
    for law, prefix in (("joint", ""), ("frontier", "frontier_")):
        prep = prepare(get_law(law), y, inputs[law])
        checks = validate_fit(prep, delta=delta, link=link, holdout_mask=mask, loo=True)
        out[f"{prefix}loo_mae_pct"] = checks["loo"]["mae_pct"]
        out[f"{prefix}holdout_mae_pct"] = checks["holdout"]["mae_pct"]
        if law == "joint":
            fit = fit_law("joint", y=y, huber_delta=delta, link=link, **inputs["joint"])
            out["_joint_params"] = fit.params
            out["_link"] = link_name(fit.link)
    return out


def reproduce_cherti2023(
    data: str | Path,
    *,
    targets: list[str] | None = None,
    out: str | Path | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    link: str | float | None = "error",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Everything `clipscale reproduce cherti2023 --json` prints; figures and CSVs go to `out`. `link` is
    the scale of the joint law (fit.estimation.link; `auto` is chosen again inside every check's fold).
    `progress` gets one line per target and stage (the CLI prints them on stderr)."""
    say = progress or (lambda line: None)
    parse_link(link)
    results, arch_info = load_paper(data)
    targets = list(targets or DEFAULT_TARGETS)
    doc: dict[str, Any] = {"fits": [], "predictions": [], "prediction_mae_pct": {}, "joint": []}
    joint_params, links = {}, {}
    figures = []
    for i, target in enumerate(targets, 1):
        say(f"reproduce: target {i}/{len(targets)} {target}: paper fits, joint law LOO and holdout")
        rows = target_rows(results, target)
        fits_json, fits = paper_fits(rows, target)
        doc["fits"] += fits_json
        if target in PREDICTION_TARGETS:
            table = prediction_table(rows, arch_info, fits["openclip"], target)
            doc["predictions"] += table
            doc["prediction_mae_pct"][target] = prediction_mae(table)
        checks = joint_checks(rows, target, link=link)
        joint_params[target] = checks.pop("_joint_params")
        links[target] = checks.pop("_link")
        doc["joint"].append(checks)
        figures.append((target, rows, fits))
    if out is not None:
        from clipscale.fit.reproduction.plots import write_reproduction_outputs

        say(f"reproduce: figures ({bootstrap} bootstrap refits for the CI bands) and tables -> {out}")
        write_reproduction_outputs(
            Path(out), doc, figures, joint_params, bootstrap=bootstrap, seed=seed, links=links, link=link
        )
    return doc
