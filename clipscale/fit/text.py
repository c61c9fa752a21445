"""The text (non --json) output of `clipscale fit`, `predict`, `isoflop` and `compare`: printers of the
documents the library returns, kept out of fit/cli.py so the CLI module stays a thin dispatcher."""

from __future__ import annotations

from typing import Any

from clipscale.fit.groups import group_label


def window_text(window: int | None) -> str:
    return "every size" if window is None else f"{window} sizes nearest the best run"


def print_fit_text(doc: dict[str, Any]) -> None:
    frontier = f" on the {doc['frontier']} frontier" if doc.get("frontier", "none") != "none" else ""
    print(f"law {doc['law']}: {doc['formula']}{frontier}")
    for f in doc["fits"]:
        head = f"{group_label(f['group'])}: " if f["group"] is not None else ""
        fitted = (
            f" ({f['n_fitted']} on the frontier)" if f.get("n_fitted", f["n_points"]) != f["n_points"] else ""
        )
        r2 = "r2 not meaningful" if f.get("dof", {}).get("warning") else (
            f"r2_log={f['r2_log']:.4f} r2={f['r2']:.4f}")
        print(
            f"{head}n={f['n_points']}{fitted} objective={f['objective']:.4g} ({f.get('objective_kind')}) "
            f"{r2} starts at best {f['n_starts_at_best']}/{f['n_starts']}"
        )
        for w in [f.get("dof", {}).get("warning"), *f.get("warnings", [])]:
            if w:
                print(f"  warning: {w}")
        if f.get("ci_unavailable"):
            print(f"  no CI: {f['ci_unavailable']}")
        if f.get("bootstrap_failed"):
            print(f"  {f['bootstrap_failed']} bootstrap refits failed")
        for k, v in {**f["params"], **f["derived"]}.items():
            ci = f["ci"].get(k)
            missing = f.get("bootstrap_undefined", {}).get(k)
            note = f" (undefined in {missing} resamples)" if missing else ""
            note += " (fixed)" if k in f.get("fixed", {}) else ""
            note += " AT BOUND" if k in f.get("at_bound", []) else ""
            med = f.get("bootstrap_median", {}).get(k)
            note += f"  (bootstrap median {med:.6g})" if med is not None else ""
            print(f"  {k:>16} = {v:.6g}" + (f"  [{ci[0]:.6g}, {ci[1]:.6g}]" if ci else "") + note)
        if f.get("at_bound"):
            reasons = f.get("at_bound_reasons") or {}
            why = "; ".join(f"{k}: {reasons[k]}" for k in f["at_bound"] if k in reasons)
            print(
                f"  warning: {', '.join(f['at_bound'])} ended at a bound of the allowed range"
                + (f" ({why})" if why else "")
                + ": the data do not determine it (try another --frontier, fewer parameters, or --fix)"
            )
        link = f.get("link", {})
        if link.get("by") == "auto" and link.get("scores_pct"):
            scores = ", ".join(f"{k} {v:.2f}" for k, v in link["scores_pct"].items())
            print(
                f"  link: {link['name']} (lambda {link['lambda']:g}; auto: forward MAE in points when "
                f"predicting N = {', '.join(f'{n:.4g}' for n in link['predicted_N'])}: {scores})"
            )
        elif link.get("lambda", -1.0) != -1.0:
            print(f"  link: {link['name']} (lambda {link['lambda']:g}, given)")
        if f.get("residuals"):
            r = [abs(v) for v in f["residuals"]]
            print(f"  residuals ({f.get('objective_kind')} scale) of the {len(r)} points: mean |r| "
                  f"{sum(r) / len(r):.4g}, max |r| {max(r):.4g}")
        for note in f.get("notes", []):
            print(f"  note: {note}")
        for name, val in f["validation"].items():
            print(f"  {name}: {_validation_text(val)}")
    links = {f["group"]: f.get("link", {}).get("name", "error") for f in doc["fits"]}
    if len(set(links.values())) > 1:
        chosen = ", ".join(f"{g}: {name}" for g, name in links.items())
        print(f"note: the groups' laws are of different scales ({chosen}); their exponents are not compared")
    for d in doc.get("differences", []):
        a, b = d["groups"]
        verdict = "differs" if d["excludes_zero"] else "no clear difference"
        print(
            f"{d['param']}[{a}] - {d['param']}[{b}] = {d['difference']:.4g}  "
            f"95% CI [{d['ci'][0]:.4g}, {d['ci'][1]:.4g}]: {verdict}"
        )


def _validation_text(val: dict[str, Any]) -> str:
    if val.get("units") == "loss":
        return (
            f"MAE {val['mae']:.4g} (loss units) = {val['mae_rel_pct']:.3f}% of the loss over {val['n']} rows "
            f"(max {val['max_abs_err']:.4g}, {val['max_rel_err_pct']:.3f}%)"
        )
    return f"MAE {val['mae_pct']:.3f} points over {val['n']} rows (max {val['max_abs_err_pct']:.3f})"


def _extrapolation_text(part: dict[str, Any]) -> None:
    """How far beyond the fitted range each input lies, and the warnings past 10x (fit.predict)."""
    for k, factor in part.get("extrapolation", {}).items():
        print(f"  {k}: extrapolates {factor:.3g}x beyond the fitted range")
    for w in part.get("warnings", []):
        print(f"  warning: {w}")


def print_prediction_text(out: dict[str, Any]) -> None:
    """Predicted error per input row (with its CI), how far beyond the fitted range, and the allocation."""
    print(f"law {out['law']}: " + ", ".join(f"{k}={v:.6g}" for k, v in out["params"].items()))
    pred = out.get("prediction")
    if pred:
        names = list(pred["inputs"])
        for i, e in enumerate(pred["predicted_error"]):
            where = ", ".join(f"{k}={pred['inputs'][k][i]:.4g}" for k in names)
            ci = ""
            if pred.get("ci_low") is not None:
                ci = f"  95% CI [{pred['ci_low'][i]:.4g}, {pred['ci_high'][i]:.4g}]"
            elif pred.get("ci_note"):
                ci = f"  (no CI: {pred['ci_note']})"
            print(f"  {where}: predicted error {e:.4g}{ci}")
        _extrapolation_text(pred)
    alloc = out.get("allocation")
    if alloc:
        print("  allocation: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in alloc.items() if not isinstance(v, (list, dict))))
        _extrapolation_text(alloc)


def print_isoflop_text(doc: dict[str, Any], *, k: float) -> None:
    """`clipscale isoflop` without --json: the exponents, then each budget's optimum."""
    for g in doc.get("groups", [{"group": None, **doc}]):
        head = f"{group_label(g['group'])}: " if g["group"] is not None else ""
        ci = lambda v: f" [{v[0]:.4g}, {v[1]:.4g}]" if v else ""  # noqa: E731
        print(
            f"{head}N* ∝ C^{g['a']:.4g}{ci(g['a_ci'])}  D* ∝ C^{g['b']:.4g}{ci(g['b_ci'])}  "
            f"({g['n_budgets_used']} of {len(g['budgets'])} budgets; D = C/({k:g}·N); "
            f"parabola window: {window_text(doc['window'])})"
        )
        if g.get("ci_note"):
            print(f"  {g['ci_note']}")
        for b in g["budgets"]:
            if b["n_sizes"] >= 3:
                flag = "  edge: excluded" if b["edge"] else ""
                if not b["edge"] and b["window_used"] != min(b["n_sizes"], doc["window"] or b["n_sizes"]):
                    flag += f"  (no vertex in the window: fitted {b['window_used']} sizes around the best)"
                print(
                    f"  C={b['C']:.4g}: N*={b['N_opt']:.4g} y*={b['y_opt']:.4g} ({b['n_sizes']} sizes){flag}"
                )


def _c(v: float | None, open_side: str) -> str:
    return f"{v:.4g}" if v is not None else open_side


def print_compare_text(doc: dict[str, Any]) -> None:
    """`clipscale compare` without --json: per pair, the difference at each C and the crossover."""
    print(f"law {doc['law']}; differences E[a] - E[b] with {100 * doc['level']:g}% CIs")
    for p in doc["pairs"]:
        a, b = p["groups"]
        lo, hi = p.get("range") or doc["range"]
        where = f"{p['dataset']}/{p['metric']} {p['law']}: " if "dataset" in p else ""
        print(f"{where}{a} vs {b} (crossover searched over C in [{lo:.4g}, {hi:.4g}]):"
              + (f"  ({p['ci_note']})" if p.get("ci_note") else ""))
        for r in p["at"]:
            ci = f"  [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}]" if r["ci"] else ""
            verdict = {None: "", False: ": no clear difference"}.get(r["excludes_zero"], "")
            if r["excludes_zero"]:
                verdict = f": {a if r['difference'] < 0 else b} lower"
            print(f"  C={r['C']:.4g}: {r['difference']:+.4g}{ci}{verdict}")
        x = p["crossover"]
        if x["C"] is None:
            print("  crossover: none in range" + (
                f" ({x['refits_with_crossover']} of {p['n_refits']} refits have one)"
                if x["refits_with_crossover"] else ""))
            continue
        ci = f"  [{_c(x['ci'][0], 'below range')}, {_c(x['ci'][1], 'beyond range')}]" if x["ci"] else ""
        more = f" (and {len(x['all']) - 1} more)" if len(x["all"]) > 1 else ""
        print(f"  crossover: C={x['C']:.4g}{ci}{more}; {x['lower_after']} lower beyond it")
