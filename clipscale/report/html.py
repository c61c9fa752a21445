"""HTML assembly: escaped text, inline CSS, figures as data URIs; nothing refers outside the file."""

from __future__ import annotations

import base64
import datetime as dt
import html
from typing import Any

from clipscale.report.analysis import describe_fit

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
    rows = []
    for f in fits:
        if "error" in f:
            rows.append([esc(f["distribution"]), esc(f["law"]), f'<span class="bad">{esc(f["error"])}</span>',
                         "", "", "", "", "", str(f.get("n_runs", ""))])
            continue
        p = f["params"]
        rows.append([esc(f["distribution"]), esc(f["law"]), esc(f["formula"]), num(p["A"]), _ci(f, "A"),
                     num(p["alpha"]), _ci(f, "alpha"), num(f["r2_log"], ".3f"), str(f["n_points"])])
    return table(["distribution", "law", "formula", "A", "A 95% CI", "alpha", "alpha 95% CI", "R² (log)",
                  "points"], rows)


def predictions_table(fits: list[dict[str, Any]]) -> str:
    rows = [[esc(f["distribution"]), esc(f["law"]), num(p["compute"]), num(p["error"]),
             f"[{num(p['ci'][0])}, {num(p['ci'][1])}]"]
            for f in fits if "predictions" in f for p in f["predictions"]]
    return table(["distribution", "law", "compute C (GMACs)", "predicted error", "95% CI"], rows)


def optimal_table(optimal: list[dict[str, Any]]) -> str:
    rows = [[esc(o["distribution"]), num(g["compute"]), esc(g["best_model"]), num(g["best_error"]),
             num(g["n_opt"]), esc(g["method"]), num(o.get("exponent"), ".3f")]
            for o in optimal for g in o["groups"]]
    return table(["distribution", "isoFLOP compute", "best model", "its error", "N_opt (M params)", "from",
                  "exponent a (N_opt ∝ C^a)"], rows)


def _findings(sections: list[dict[str, Any]]) -> str:
    items = [f"<li>{esc(describe_fit(f))}</li>" for s in sections for f in s["fits"]]
    for s in sections:
        for o in s["optimal"]:
            if "exponent" in o:
                items.append(f"<li>{esc(s['dataset'])} {esc(s['metric'])} [{esc(o['distribution'])}]: "
                             f"compute-optimal size N_opt ∝ C^{o['exponent']:.2f}</li>")
    return f'<div class="finding"><ul>{"".join(items)}</ul></div>' if items else "<p>No fits yet.</p>"


def _section(s: dict[str, Any]) -> str:
    parts = [f"<h3>{esc(s['dataset'])} — {esc(s['metric'])}</h3>", img(s["scaling_png"], "error vs compute"),
             fits_table(s["fits"]), "<h4>Predictions for larger budgets</h4>", predictions_table(s["fits"])]
    if "isoflop_png" in s:
        parts += ["<h4>Compute-optimal model size</h4>", img(s["isoflop_png"], "isoFLOP groups"),
                  optimal_table(s["optimal"])]
    return "\n".join(parts)


def render(*, study: Any, runs: Any, table: Any, figures: dict[str, bytes],
           sections: list[dict[str, Any]]) -> str:
    states = runs.state.value_counts().to_dict() if len(runs) else {}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    runs_html = runs.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}") if len(runs) else ""
    table_html = (table.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}") if len(table)
                  else "<p>No evaluations yet.</p>")
    body = [
        f"<h1>Scaling study: {esc(study.name)}</h1>",
        f"<p>Study file <code>{esc(study.path)}</code>, generated "
        f"{esc(dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}. {len(runs)} runs ({esc(summary)}), "
        f"{len(table)} evaluations. Compute C = forward GMACs per sample × samples seen.</p>",
        "<h2>Findings</h2>", _findings(sections),
        "<h2>The grid</h2>", img(figures["grid"], "grid") if "grid" in figures else "",
        f'<div class="scroll">{runs_html}</div>',
        "<h2>Learning curves</h2>", img(figures["curves"], "learning curves") if "curves" in figures else
        "<p>No training metrics yet.</p>",
        "<h2>Error vs compute</h2>",
        "<p>Large markers: each run's final checkpoint; faint dots: intermediate checkpoints; "
        "hollow squares: data-constrained runs (more than 10 passes over their data). "
        "Lines: fitted laws over the measured range, dashed: extrapolation, "
        "bands: 95% bootstrap intervals (resampling runs).</p>",
        *(_section(s) for s in sections),
        "<h2>Every number</h2>", f'<div class="scroll">{table_html}</div>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>clipscale report: {esc(study.name)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
