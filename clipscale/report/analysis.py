"""What a report reads off a results table and a saved-fit document; it fits nothing itself.

Error is 1 − metric for accuracy-like metrics (the paper's E) and the value itself for losses. Laws
are fitted on each run's final checkpoint (a mid-run checkpoint of a cosine schedule is not a run
trained to that budget). A run that saw its data more than `[fit] max_passes` times (default
DATA_CONSTRAINED_REPEATS) is data-constrained: the fit stage (`clipscale.study.pipeline`) and the plots
use this one definition.
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
    """(dataset, metric) pairs the table has values for, in a stable order (the first is the headline):
    per metric, a suite's aggregates (task "aggregate": the mean over its parts) before single datasets."""
    out = []
    for metric in metrics:
        if metric not in df.columns:
            continue
        rows = df.loc[df[metric].notna(), ["dataset", "task"]].drop_duplicates("dataset")
        order = sorted(rows.itertuples(index=False), key=lambda r: (r.task != "aggregate", str(r.dataset)))
        out += [(str(r.dataset), metric) for r in order]
    return out


def final_points(df: Any, dataset: str, metric: str, *, max_passes: float = DATA_CONSTRAINED_REPEATS) -> Any:
    """Final checkpoints of one target with `error`, `repeats` (passes over the data) and `constrained`
    (more than `max_passes` passes: `[fit] max_passes`)."""
    rows = df[(df.dataset == dataset) & df.final & df[metric].notna()].copy()
    rows["error"] = error_of(rows, metric)
    rows["repeats"] = rows.samples_seen / rows.data_size
    rows["constrained"] = rows.repeats > max_passes
    return rows[rows.error > 0]


def fitted(entry: dict[str, Any]) -> Any:
    """The FitResult of a saved fit entry (JSON only: from_dict never executes anything)."""
    from clipscale.fit.result import FitResult

    return FitResult.from_dict(entry)


def points_text(f: dict[str, Any]) -> str:
    """`12 points`, or `5 of 12 points on the frontier` when a frontier thinned them."""
    n, fitted = f["n_points"], f.get("n_fitted", f["n_points"])
    return f"{n} points" if fitted == n else f"{fitted} of {n} points on the frontier"


def bound_params(f: dict[str, Any]) -> list[str]:
    """The parameters a fit flags as at a bound of their range (`at_bound`: names, or name -> flag)."""
    flagged = f.get("at_bound") or []
    if isinstance(flagged, dict):
        return [k for k, v in flagged.items() if v]
    return [str(k) for k in flagged]


def link_text(f: dict[str, Any]) -> str:
    """Nothing for a law of E; else which scale the law's parameters are of (`, law of -log(accuracy) …`)."""
    link = f.get("link") or {}
    lam = link.get("lambda", -1.0)
    if lam == -1.0:
        return ""
    scale = {0.0: "-log(accuracy)", 1.0: "the odds E/(1-E)"}.get(lam, f"((1-E)^{-lam:g} - 1)/{lam:g}")
    return f", law of {scale} (link {link.get('name', lam)}, {link.get('by', 'given')})"


def describe_fit(f: dict[str, Any]) -> str:
    """One line: the fit's group name (DATASET/METRIC/DISTRIBUTION/LAW, what `predict --group` takes), the
    law with its numbers."""
    head = str(f["group"])
    if f.get("frontier", "none") != "none" and f["law"] != "frontier":  # law frontier = power on cherti
        head += f" on the {f['frontier']} frontier"
    head += link_text(f)
    if "error" in f:
        return f"{head}: no fit ({short_error(f['error'])})"
    p, ci = f["params"], f.get("ci", {})
    values = ", ".join(f"{k} {v:.3g}" for k, v in p.items())
    alpha_ci = f"alpha 95% CI [{ci['alpha'][0]:.3f}, {ci['alpha'][1]:.3f}], " if "alpha" in ci else ""
    bound = f", at a bound: {', '.join(bound_params(f))}" if bound_params(f) else ""
    r2 = f.get("r2_log")
    finite = r2 is not None and np.isfinite(r2)
    r2_text = f"R² log {r2:.3f}" if finite else "R² log n/a: the points' E do not vary"
    return (f"{head}: {f['formula']} with {values} ({alpha_ci}{r2_text}, "
            f"{points_text(f)}{bound})")


def max_passes_text(limit: float | None) -> str:
    """`10`, or `inf` for no limit (fits.json stores null)."""
    return "inf" if limit is None or limit == float("inf") else f"{limit:g}"


def left_out_text(left_out: dict[str, Any]) -> str:
    """`data-constrained: 2 of 14 runs left out ...`: said always, also when 0 runs are."""
    limit = max_passes_text(left_out.get("max_passes"))
    if limit == "inf":
        return (f"data-constrained: 0 of {left_out['of']} runs left out ([fit] max_passes = inf: every run "
                "is in every fit)")
    return (f"data-constrained: {left_out['runs']} of {left_out['of']} runs left out of the laws of compute "
            f"and the isoFLOP analysis (more than {limit} passes over their unique data, samples_seen / "
            f"data_size; [fit] max_passes = {limit}); laws with an input U of unique samples keep them")


def short_error(error: str) -> str:
    """A saved failure without the exception's class name (`ClipscaleError: `) and the verb's prefix."""
    text = str(error)
    head, sep, rest = text.partition(": ")
    if sep and head.isidentifier() and head.endswith(("Error", "Exception")):
        text = rest
    return text.removeprefix("isoflop: ")


def isoflop_line(o: dict[str, Any]) -> str:
    """One distribution's isoFLOP analysis: each budget's N_opt (or `edge`), then the exponent or why none,
    e.g. `synth_retrieval/image_retrieval_recall@5/uniform: C=40: 1.2, C=128: edge -> N_opt ∝ C^0.50 ...`."""
    budgets = ", ".join(f"C={b['C']:.3g}: " + ("edge" if b.get("edge") else f"{b['N_opt']:.3g}")
                        for b in o.get("budgets", []))
    if o.get("a") is not None:
        ci = o.get("a_ci")
        exp = f" -> N_opt ∝ C^{o['a']:.2f} (95% CI " + (f"[{ci[0]:.2f}, {ci[1]:.2f}])" if ci else "n/a)")
    else:
        why = short_error(o.get("error") or "too few interior budgets").split(" (")[0]
        exp = f" -> no exponent: {why}"
    return f"{o['dataset']}/{o['metric']}/{o['distribution']}: {budgets}{exp}"


def headline_isoflop(doc: dict[str, Any], primary: str) -> list[dict[str, Any]]:
    """The isoFLOP analyses of the headline metric (the first of [fit] metrics) only: the others are
    details, and nothing here knows a metric's chance level, so an exponent of a metric that never left
    chance (the demo's 8-way shape accuracy) must not read as a finding."""
    return [o for o in doc.get("isoflop", []) if o.get("metric") == primary]


def no_fits_text(doc: dict[str, Any]) -> str:
    """Why a fits.json document has no fitted law, e.g. `none (2 of 2 fits failed: ...)`."""
    failed = doc.get("failed", [])
    if failed:
        first = failed[0]
        return (f"none ({len(failed)} of {len(failed)} fits failed; {first['group']}: "
                f"{short_error(first['error'])})")
    left = doc.get("left_out") or {}
    runs, of = int(left.get("runs", 0) or 0), left.get("of", 0)
    missing = doc.get("missing_runs", [])
    pending = f"; {len(missing)} run(s) not finished (`clipscale status` lists them)" if missing else ""
    if not of:
        metrics = ", ".join(doc.get("settings", {}).get("metrics", [])) or "?"
        return f"none yet: no finished run has results for the [fit] metrics ({metrics}){pending}"
    if runs and runs == of:
        limit = max_passes_text(left.get("max_passes"))
        return (f"none: all {of} run(s) with results are data-constrained (more than {limit} passes over "
                f"their unique data) and left out of the laws of compute; [fit] max_passes = inf keeps "
                f"them{pending}")
    return f"none: too few runs to fit ({of - runs} with results){pending}"
