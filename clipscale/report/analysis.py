"""The numbers a report shows: fitted laws per (task, distribution), predictions, compute-optimal sizes.

Error is 1 − metric for accuracy-like metrics (the paper's E) and the value itself for losses. Laws
are fitted on each run's final checkpoint (a mid-run checkpoint of a cosine schedule is not a run
trained to that budget). The compute-optimal model size per isoFLOP group follows Chinchilla's
approach 2: a parabola of log E in log N through the group's models, its vertex when it lies inside
the ladder, else the best model; a power law N_opt ∝ C^a through those says how size should grow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOSS_METRICS = ("loss", "eval_loss", "infonce_loss")
DATA_CONSTRAINED_REPEATS = 10.0  # findings: 27 repeats memorise, 9 show no penalty


def is_loss(metric: str) -> bool:
    return metric in LOSS_METRICS or metric.endswith("_loss")


def error_of(df: Any, metric: str) -> np.ndarray:
    values = df[metric].to_numpy(dtype=float)
    return values if is_loss(metric) else 1.0 - values



def targets(df: Any, metrics: tuple[str, ...]) -> list[tuple[str, str]]:
    """(dataset, metric) pairs that the table has final values for, in a stable order."""
    out = []
    for metric in metrics:
        if metric not in df.columns:
            continue
        for dataset in sorted(df.loc[df[metric].notna(), "dataset"].unique()):
            out.append((str(dataset), metric))
    return out


def final_points(df: Any, dataset: str, metric: str) -> Any:
    rows = df[(df.dataset == dataset) & df.final & df[metric].notna()].copy()
    rows["error"] = error_of(rows, metric)
    rows["repeats"] = rows.samples_seen / rows.data_size
    rows["constrained"] = rows.repeats > DATA_CONSTRAINED_REPEATS
    return rows[rows.error > 0]


def fit_target(df: Any, *, dataset: str, metric: str, laws: tuple[str, ...], bootstrap: int,
               predict_compute: tuple[float, ...]) -> list[dict[str, Any]]:
    """One fit per (law, distribution) of a target; failures are recorded, never raised."""
    from clipscale.fit import fit_law

    points = final_points(df, dataset, metric)
    fits = []
    for distribution in sorted(points.distribution.unique()):
        sub = points[points.distribution == distribution]
        budgets = list(predict_compute) or [sub.compute.max() * 10, sub.compute.max() * 100]
        for law in laws:
            entry: dict[str, Any] = {"dataset": dataset, "metric": metric, "distribution": distribution,
                                     "law": law, "n_runs": len(sub)}
            try:
                res = fit_law(law, y=sub.error.to_numpy(), C=sub.compute.to_numpy(), bootstrap=bootstrap,
                              seed=0, groups=sub.run_id.to_numpy(), loss=is_loss(metric))
            except Exception as exc:  # too few points, no convergence: shown in the report
                entry["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                fits.append(entry)
                continue
            entry.update({"formula": res.formula, "params": res.params, "ci": res.ci, "r2_log": res.r2_log,
                          "n_points": res.n_points, "predictions": _predictions(res, budgets),
                          "fit": res})
            fits.append(entry)
    return fits


def _predictions(res: Any, budgets: list[float]) -> list[dict[str, Any]]:
    c = np.asarray(budgets, float)
    pred = res.predict(C=c)
    samples = res.predict_samples(C=c)
    out = []
    for i, ci in enumerate(c):
        lo, hi = (np.nanpercentile(samples[:, i], [2.5, 97.5]) if len(samples) else (np.nan, np.nan))
        out.append({"compute": float(ci), "error": float(pred[i]), "ci": [float(lo), float(hi)]})
    return out


def optimal_size(group: Any) -> tuple[float, str]:
    """N_opt of one isoFLOP group (parabola vertex in log N if inside the ladder, else the argmin)."""
    group = group.sort_values("params")
    best = group.loc[group.error.idxmin()]
    if len(group) < 3:
        return float(best.params), "argmin"
    x, y = np.log(group.params.to_numpy(float)), np.log(group.error.to_numpy(float))
    a, b, _ = np.polyfit(x, y, 2)
    if a > 0 and x.min() <= -b / (2 * a) <= x.max():
        return float(np.exp(-b / (2 * a))), "parabola"
    return float(best.params), "argmin"


def compute_optimal(df: Any, *, dataset: str, metric: str) -> list[dict[str, Any]]:
    """Per distribution: N_opt for each isoFLOP group and the exponent a of N_opt ∝ C^a."""
    points = final_points(df, dataset, metric)
    points = points[points.compute_group.notna() & ~points.constrained]
    out = []
    for distribution in sorted(points.distribution.unique()):
        sub = points[points.distribution == distribution]
        groups = []
        for level, group in sub.groupby("compute_group"):
            n_opt, how = optimal_size(group)
            best = group.loc[group.error.idxmin()]
            groups.append({"compute": float(level), "n_opt": n_opt, "method": how, "best_model": best.model,
                           "best_error": float(best.error),
                           "errors": {m: float(e) for m, e in zip(group.model, group.error)}})
        entry: dict[str, Any] = {"dataset": dataset, "metric": metric, "distribution": distribution,
                                 "groups": groups}
        if len(groups) >= 2:
            c = np.log([g["compute"] for g in groups])
            n = np.log([g["n_opt"] for g in groups])
            slope, intercept = np.polyfit(c, n, 1)
            entry["exponent"] = float(slope)
            entry["coefficient"] = float(np.exp(intercept))
        out.append(entry)
    return out


def analyse(df: Any, *, metrics: tuple[str, ...], laws: tuple[str, ...], bootstrap: int,
            predict_compute: tuple[float, ...] = ()) -> dict[str, Any]:
    fits, optimal = [], []
    for dataset, metric in targets(df, metrics):
        fits += fit_target(df, dataset=dataset, metric=metric, laws=laws, bootstrap=bootstrap,
                           predict_compute=predict_compute)
        optimal += compute_optimal(df, dataset=dataset, metric=metric)
    return {"fits": fits, "compute_optimal": optimal}


def jsonable(analysis: dict[str, Any]) -> dict[str, Any]:
    """The analysis without fitted objects (for fits.json)."""
    return {"fits": [{k: v for k, v in f.items() if k != "fit"} for f in analysis["fits"]],
            "compute_optimal": analysis["compute_optimal"]}


def describe_fit(f: dict[str, Any]) -> str:
    """One line: target, distribution, the law with its numbers."""
    head = f"{f['dataset']} {f['metric']} [{f['distribution']}] {f['law']}"
    if "error" in f:
        return f"{head}: no fit ({f['error']})"
    p, ci = f["params"], f.get("ci", {})
    alpha_ci = f" [{ci['alpha'][0]:.3f}, {ci['alpha'][1]:.3f}]" if "alpha" in ci else ""
    extra = f" + {p['E_inf']:.3g}" if "E_inf" in p else ""
    return (f"{head}: E = {p['A']:.3g}·C^{p['alpha']:.3f}{extra} (alpha 95% CI{alpha_ci or ' n/a'}, "
            f"R² log {f['r2_log']:.3f}, {f['n_points']} points)")
