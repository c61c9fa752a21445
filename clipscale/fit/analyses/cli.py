"""Verbs `compare` and `isoflop`: the analyses on top of fitted laws. Standard library only at top level
(the CLI imports this at start-up); handlers import the rest. The law options are `clipscale fit`'s."""

from __future__ import annotations

import argparse
from typing import Any

from clipscale.fit.cli import (
    add_law_options,
    add_max_passes_option,
    add_plot_option,
    emit_document,
    parse_fix,
)
from clipscale.jsonout import add_json_flag


def register(subparsers: Any) -> None:
    _register_compare(subparsers)
    _register_isoflop(subparsers)


def _register_compare(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", help="compare groups across compute: error differences and crossover, with CIs"
    )
    p.add_argument("source", help="results table (then --by and the law options) or FITS.json (fit --save)")
    add_law_options(p, y_required=False)
    add_max_passes_option(p)
    p.add_argument("--at", nargs="+", type=float, metavar="C",
                   help="compute values (default: the largest C measured, 10x and 100x beyond it)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="refits per group (a table; a saved document's own refits are used as saved)")
    p.add_argument("--huber-delta", type=float, default=1e-3,
                   help="Huber loss threshold on log residuals (larger = closer to least squares)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap resamples")
    add_json_flag(p)
    p.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace) -> int:
    from clipscale.errors import ClipscaleError
    from clipscale.fit.analyses.compare import compare_saved, compare_table, is_saved_fits
    from clipscale.fit.rows import leave_out_passes, load_table
    from clipscale.progress import print_progress

    passes_note = None
    if is_saved_fits(args.source):
        if args.max_passes is not None:
            raise ClipscaleError(f"--max-passes: {args.source} holds fitted laws, not rows to leave out; "
                                 "give the results table (a study's fits already leave out its [fit] "
                                 "max_passes)")
        doc = compare_saved(args.source, by=args.by, at=args.at)
    else:
        if not args.by or not args.y:
            raise ClipscaleError("compare TABLE needs --by COL (the groups) and --y (and the law's inputs)")
        df, passes_note = leave_out_passes(load_table(args.source), args.max_passes, args.where)
        doc = compare_table(
            df, by=args.by, at=args.at, bootstrap=args.bootstrap, law=args.law,
            C=args.C, N=args.N, D=args.D, U=args.U, S=args.S, y=args.y, where=args.where,
            error=args.error, seed=args.seed, run=args.run, huber_delta=args.huber_delta, loss=args.loss,
            frontier=args.frontier, fix=parse_fix(args.fix), link=args.link, objective=args.objective,
            frontier_bins=args.frontier_bins, fit_where=args.fit_where, progress=print_progress,
        )
    from clipscale.fit.text import print_compare_text

    return emit_document(doc, passes_note, as_json=args.json, print_text=print_compare_text)


def _register_isoflop(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "isoflop", help="compute-optimal model size per compute budget (Chinchilla approach 2)"
    )
    p.add_argument("table", help="results table: .csv, .jsonl/.json or .parquet")
    p.add_argument("--C", required=True, help="compute of each run: column name or expression")
    p.add_argument("--N", required=True, help="model size of each run: column name or expression")
    p.add_argument("--y", required=True, help="loss or error column or expression (accuracy with --error)")
    p.add_argument("--error", action="store_true", help="y is accuracy-like: analyse 1 - y")
    p.add_argument("--by", help="one analysis per value of this column (default: one analysis)")
    p.add_argument("--where", help="boolean expression selecting rows (default: every row)")
    add_max_passes_option(p)
    p.add_argument("--k", type=float, default=1.0, help="C = k·N·D (6 for LLM FLOPs; 1 for CLIP GMACs)")
    p.add_argument("--gap", type=float, default=0.05, help="log10 C gap (dex) that separates budgets")
    p.add_argument(
        "--window",
        default=None,
        metavar="K",
        help="fit each budget's parabola to the K sizes nearest its best run (K >= 3; 'all': every size) "
        "(default: 7)",
    )
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="percentile CIs from N resamples (0: no CIs)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap resamples")
    add_plot_option(p, "isoflop.png", "the figure (each budget's parabola, N* against C)")
    add_json_flag(p)
    p.set_defaults(handler=_isoflop)


def _isoflop(args: argparse.Namespace) -> int:
    from clipscale.fit.analyses.isoflop import isoflop, plot_isoflop
    from clipscale.fit.plot import check_figure_path
    from clipscale.fit.rows import leave_out_passes, load_table

    if args.plot:
        check_figure_path(args.plot)
    df, passes_note = leave_out_passes(load_table(args.table), args.max_passes, args.where)
    doc = isoflop(
        df,
        C=args.C,
        N=args.N,
        y=args.y,
        by=args.by,
        bootstrap=args.bootstrap,
        seed=args.seed,
        where=args.where,
        k=args.k,
        error=args.error,
        gap=args.gap,
        **_window(args.window),
    )
    if args.plot:
        plot_isoflop(doc, df, args.plot)
    from clipscale.fit.text import print_isoflop_text

    return emit_document(doc, passes_note, as_json=args.json,
                         print_text=lambda d: print_isoflop_text(d, k=args.k))


def _window(text: str | None) -> dict[str, Any]:
    """--window K (an integer), 'all' (every size, None), or not given (the library's default)."""
    from clipscale.errors import ClipscaleError

    if text is None:
        return {}
    if text == "all":
        return {"window": None}
    try:
        return {"window": int(text)}
    except ValueError:
        raise ClipscaleError(f"--window {text!r}: expected an integer >= 3 or 'all'") from None
