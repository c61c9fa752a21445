"""HTML assembly: escaped text, inline CSS, figures as data URIs; nothing refers outside the file."""

from __future__ import annotations

import base64
import datetime as dt
import html
from typing import Any

from clipscale.report import analysis
from clipscale.report.analysis import bound_params, describe_fit, left_out_text, link_text, points_text

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1180px;color:#222;
padding:0 1em;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
.scroll{max-height:480px;overflow:auto;border:1px solid #eee}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
.finding{background:#f7faff;border-left:4px solid #1f77b4;padding:.5em 1em;margin:.6em 0}
.bad{color:#b00}code{background:#f4f4f4;padding:1px 4px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def num(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "–"
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return esc(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ci(fit: dict[str, Any], key: str) -> str:
    ci = fit.get("ci", {}).get(key)
    return f"[{num(ci[0])}, {num(ci[1])}]" if ci else "–"


def fits_table(fits: list[dict[str, Any]]) -> str:
    """One row per fit: its group name (for `clipscale predict --group`), law, every parameter with its CI."""
    rows = []
    for f in fits:
        head = [f"<code>{esc(f['group'])}</code>", esc(f["distribution"]), esc(f["law"]),
                esc(f.get("frontier", "none"))]
        if "error" in f:
            rows.append([*head, f'<span class="bad">{esc(f["error"])}</span>', "", "",
                         str(f.get("n_runs", ""))])
            continue
        bound = set(bound_params(f))
        params = "<br>".join(f"{esc(k)} = {num(v)} {_ci(f, k)}" + (' <span class="bad">at bound</span>'
                                                                    if k in bound else "")
                             for k, v in f["params"].items())
        formula = esc(f["formula"] + link_text(f))
        rows.append([*head, formula, params, num(f["r2_log"], ".3f"), esc(points_text(f))])
    return table(["group", "distribution", "law", "frontier", "formula", "parameters (95% CI)", "R² (log)",
                  "points"], rows)


def predictions_table(fits: list[dict[str, Any]]) -> str:
    rows = [[f"<code>{esc(f['group'])}</code>", esc(f["law"]), num(p["compute"]), num(p["error"]),
             f"[{num(p['ci'][0])}, {num(p['ci'][1])}]"]
            for f in fits if "predictions" in f for p in f["predictions"]]
    return table(["group", "law", "compute C (GMACs)", "predicted error", "95% CI"], rows)


def differences_table(diffs: list[dict[str, Any]]) -> str:
    rows = [[esc(d["law"]), esc(d["param"]), esc(" − ".join(map(str, d["groups"]))), num(d["difference"]),
             f"[{num(d['ci'][0])}, {num(d['ci'][1])}]", "yes" if d["excludes_zero"] else "no"]
            for d in diffs]
    return table(["law", "exponent", "distributions", "difference", "95% CI", "CI excludes 0"], rows)


def comparisons_table(pairs: list[dict[str, Any]]) -> str:
    """`clipscale compare` between distributions: the error difference at each compute with its CI, and
    the crossover compute (open CI ends lie outside the range searched)."""
    rows = []
    for p in pairs:
        x = p["crossover"]
        if x["C"] is None:
            cross = "none in range"
        else:
            ends = [num(v) if v is not None else "out of range" for v in (x["ci"] or [])]
            cross = f"{num(x['C'])}" + (f" [{', '.join(ends)}]" if ends else "")
            cross += f"; then {esc(x['lower_after'])} is lower"
        for r in p["at"]:
            ci = f"[{num(r['ci'][0])}, {num(r['ci'][1])}]" if r["ci"] else esc(p.get("ci_note") or "–")
            pair = esc(" − ".join(map(str, p["groups"])))
            rows.append([esc(p["law"]), pair, num(r["C"]), num(r["difference"]), ci, cross])
    return table(["law", "distributions", "compute C", "error difference", "95% CI", "crossover C [95% CI]"],
                 rows)


def _ci_text(value: Any, ci: Any, spec: str = ".3f") -> str:
    text = num(value, spec)
    return f"{text} [{num(ci[0], spec)}, {num(ci[1], spec)}]" if ci else text


def isoflop_table(isoflop: list[dict[str, Any]]) -> str:
    """Per distribution: the exponents with their CIs, then each budget's vertex; edge budgets flagged."""
    summary, rows = [], []
    for o in isoflop:
        budgets = o.get("budgets", [])
        used = sum(not b.get("edge") for b in budgets)
        if "error" in o:
            summary.append([esc(o["distribution"]), f'<span class="bad">{esc(o["error"])}</span>', "",
                            f"{used} of {len(budgets)}"])
        else:
            note = f' <span class="bad">{esc(o["ci_note"])}</span>' if o.get("ci_note") else ""
            summary.append([esc(o["distribution"]), _ci_text(o.get("a"), o.get("a_ci")) + note,
                            _ci_text(o.get("b"), o.get("b_ci")), f"{used} of {len(budgets)}"])
        for b in budgets:
            if b.get("edge"):
                rows.append([esc(o["distribution"]), num(b["C"]), "–", "–",
                             '<span class="bad">minimum at the smallest or largest size: excluded</span>'])
            else:
                rows.append([esc(o["distribution"]), num(b["C"]), num(b.get("N_opt")), num(b.get("y_opt")),
                             "inside the ladder"])
    return (table(["distribution", "a in N_opt ∝ C^a (95% CI)", "b in D_opt ∝ C^b (95% CI)",
                   "budgets used"], summary)
            + table(["distribution", "budget C (GMACs)", "N_opt (M params)", "error at N_opt", "vertex"],
                    rows))


def extrapolation_table(fits: list[dict[str, Any]]) -> str:
    """Each law refitted without the largest compute group, against that group's measured error."""
    rows = []
    for f in fits:
        if "extrapolation_check" not in f:
            continue
        c = f["extrapolation_check"]
        head = [f"<code>{esc(f['group'])}</code>", esc(f["law"])]
        if c is None:
            why = esc(f.get("extrapolation_check_reason", ""))
            rows.append([*head, "–", "–", "–", "–", "–", f'<span class="bad">not made: {why}</span>'])
            continue
        interval = f"[{num(c['ci_low'])}, {num(c['ci_high'])}]" if c.get("ci_low") is not None else "–"
        verdict = c.get("verdict") or c.get("reason", "")
        rows.append([*head, f"{num(c['group_compute'])} ({len(c['runs'])} runs)", str(c["n_runs"]),
                     num(c["measured"]), num(c["predicted"]), interval,
                     esc(verdict) if verdict == "held" else f'<span class="bad">{esc(verdict)}</span>'])
    return table(["group", "law", "largest compute group C", "runs refitted", "measured error",
                  "predicted", "95% prediction interval", "verdict"], rows) if rows else ""


def off_law_table(rows: list[dict[str, Any]]) -> str:
    body = [[esc(r["model"]), f"<code>{esc(r['group'])}</code>", f"{r['data_size']:,}",
             num(r["repeats"], ".0f"), num(r["compute"]), num(r["error"]), num(r["law_error"]),
             num(r["ratio"], ".2f")] for r in rows]
    return table(["model", "law (group)", "unique samples", "passes", "compute C", "error", "law's error",
                  "ratio"], body)


def _findings(sections: list[dict[str, Any]], fits: dict[str, Any], primary: str) -> str:
    """Every fitted law, then the isoFLOP analysis of the headline metric only, in the words `clipscale
    run` prints (`clipscale.study.demo.summarize`); the other metrics' analyses are in their sections."""
    laws = [f for s in sections for f in s["fits"]]
    if not any("error" not in f for f in laws):
        return f"<p>No fitted laws: {esc(analysis.no_fits_text(fits))}.</p>"
    items = [f"<li>{esc(describe_fit(f))}</li>" for f in laws]
    items += [f"<li>isoFLOP ({esc(primary)}): {esc(analysis.isoflop_line(o))}</li>"
              for o in analysis.headline_isoflop(fits, primary)]
    return f'<div class="finding"><ul>{"".join(items)}</ul></div>'


def _isoflop_heading(metric: str, primary: str) -> str:
    """The headline metric's isoFLOP analysis is a finding; any other metric's is labelled a detail."""
    if metric == primary:
        return "<h4>isoFLOP analysis: compute-optimal model size</h4>"
    return (f"<h4>isoFLOP analysis of {esc(metric)} (detail, not a finding)</h4>"
            f"<p>Only the headline metric's (the first of <code>[fit] metrics</code>, {esc(primary)}) is "
            "among the findings. The report does not know this metric's chance level: an exponent of a "
            "metric that stays near chance at every size means nothing.</p>")


def _section(s: dict[str, Any], primary: str) -> str:
    parts = [f"<h3>{esc(s['dataset'])} — {esc(s['metric'])}</h3>", img(s["scaling_png"], "error vs compute"),
             fits_table(s["fits"]), "<h4>Predictions for larger budgets</h4>", predictions_table(s["fits"])]
    check = extrapolation_table(s["fits"])
    if check:
        parts += ["<h4>Does the law predict the largest run?</h4>",
                  "<p>Each law refitted without the largest compute group (the runs of the largest budget, "
                  "within 0.05 dex) predicts that group; held: the measured error lies inside the 95% "
                  "prediction interval (bootstrap of the refit plus its residual scatter).</p>", check]
    if s["differences"]:
        parts += ["<h4>Do the distributions scale differently?</h4>", differences_table(s["differences"])]
    if s.get("comparisons"):
        parts += ["<h4>Which distribution is better, across compute?</h4>",
                  "<p>Predicted error of the first distribution minus the second's, at the largest compute "
                  "measured and beyond (or <code>[fit] predict_compute</code>), and the compute where one "
                  "overtakes the other (searched from the smallest compute measured to the largest shown); "
                  "95% CIs from the bootstrap refits (<code>clipscale compare</code>).</p>",
                  comparisons_table(s["comparisons"])]
    if s["isoflop"]:
        parts += [_isoflop_heading(s["metric"], primary),
                  "<p>Per compute budget a parabola of log error in log N through the budget's model sizes; "
                  "its vertex is N_opt. Budgets whose minimum lies at the smallest or largest size are "
                  "flagged and left out of the power laws N_opt ∝ C^a and D_opt ∝ C^b.</p>"]
        parts += [img(s["isoflop_png"], "isoFLOP analysis")] if "isoflop_png" in s else []
        parts.append(isoflop_table(s["isoflop"]))
    return "\n".join(parts)


def _status(runs: Any, fits: dict[str, Any]) -> str:
    """Whether the study is complete; if not, which runs the numbers below lack."""
    missing = fits.get("missing_runs", [])
    if not missing:
        return f'<p class="finding">Complete: all {len(runs)} runs of the study file finished.</p>'
    listed = ", ".join(f"{m['run_id']} ({m['state']})" for m in missing[:20])
    more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    return (f'<p class="finding bad">Incomplete: {len(missing)} of {len(runs)} runs have not finished, so '
            f"every fit below lacks them: {esc(listed)}{more}.</p>")


def frontiers_text(fits: dict[str, Any]) -> str:
    """The frontier each law was actually fitted on (law `frontier` is power on the cherti frontier,
    whatever `[fit] frontier` says), e.g. `Frontier: cherti (frontier law); none (power law).`"""
    used: dict[str, list[str]] = {}
    for f in fits.get("fits", []):
        laws = used.setdefault(str(f.get("frontier", "none")), [])
        if f["law"] not in laws:
            laws.append(f["law"])
    if not used:  # no fit yet: the frontier each law will be fitted on
        frontier = fits.get("settings", {}).get("frontier", "none")
        for law in fits.get("settings", {}).get("laws", []):
            used.setdefault("cherti" if law == "frontier" else str(frontier), []).append(law)
    if not used:
        return f"Frontier: {fits.get('settings', {}).get('frontier', 'none')}."
    return "Frontier: " + "; ".join(f"{fr} ({', '.join(laws)} law{'s' if len(laws) > 1 else ''})"
                                    for fr, laws in used.items()) + "."


def _constrained(fits: dict[str, Any]) -> str:
    st = fits.get("settings", {})
    left = fits.get("left_out") or {"max_passes": st.get("max_passes", 10),
                                    "runs": len(fits.get("constrained_runs", [])), "of": "?"}
    text = f"<p>{esc(left_out_text(left))}. {esc(frontiers_text(fits))}</p>"
    if fits.get("off_law"):
        text += "<h4>Data-constrained runs against the fitted law</h4>" + off_law_table(fits["off_law"])
    return text


def render(*, study: Any, runs: Any, table: Any, figures: dict[str, bytes],
           sections: list[dict[str, Any]], fits: dict[str, Any],
           notes: list[str] | tuple[str, ...] = ()) -> str:
    primary = study.fit.metrics[0]  # the headline metric, as `clipscale run` prints it
    states = runs.state.value_counts().to_dict() if len(runs) else {}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    runs_html = (runs.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", na_rep="—")
                 if len(runs) else "")  # a blank, not NaN / None: no compute group, no value
    table_html = (table.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", na_rep="—")
                  if len(table)
                  else "<p>No evaluations yet.</p>")
    body = [
        f"<h1>Scaling study: {esc(study.name)}</h1>",
        f"<p>Study file <code>{esc(study.path)}</code>, generated "
        f"{esc(dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}. {len(runs)} runs ({esc(summary)}), "
        f"{len(table)} evaluations. Compute C = forward GMACs per sample × samples seen.</p>",
        _status(runs, fits),
        "<h2>Findings</h2>", _findings(sections, fits, primary),
        "<p>Group names (DATASET/METRIC/DISTRIBUTION/LAW) are those of <code>fits.json</code> and of "
        "<code>clipscale predict OUTPUT_DIR/fits.json --group NAME --C X</code>.</p>",
        "<h2>The grid</h2>", img(figures["grid"], "grid") if "grid" in figures else "",
        f'<div class="scroll">{runs_html}</div>',
        "<h2>Learning curves</h2>", img(figures["curves"], "learning curves") if "curves" in figures else
        "<p>No training metrics yet.</p>",
        "<h2>Error vs compute</h2>",
        "<p>Large markers: each run's final checkpoint; faint dots: intermediate checkpoints; "
        "hollow squares: data-constrained runs (more than <code>[fit] max_passes</code> passes over their "
        "data). "
        "Lines: fitted laws over the measured range, dashed: extrapolation, "
        "bands: 95% bootstrap intervals (resampling runs).</p>",
        _constrained(fits),
        *(f'<p class="note">{esc(n)}</p>' for n in notes),
        *(_section(s, primary) for s in sections),
        "<h2>Every number</h2>", f'<div class="scroll">{table_html}</div>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>clipscale report: {esc(study.name)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
