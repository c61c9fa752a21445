"""Verbs `fit`, `predict`, `reproduce` (`compare` and `isoflop`: `clipscale.fit.analyses.cli`). Standard
library only at top level; handlers import the rest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from clipscale.jsonout import add_json_flag


def register(subparsers: Any) -> None:
    _register_fit(subparsers)
    _register_predict(subparsers)
    _register_reproduce(subparsers)


def _register_fit(subparsers: Any) -> None:
    p = subparsers.add_parser("fit", help="fit a scaling law to a results table (CSV, JSON lines, parquet)")
    p.add_argument("table", help="results table: .csv, .jsonl/.json or .parquet")
    add_law_options(p, y_required=True)
    add_max_passes_option(p)
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="percentile CIs from N refits (0: no CIs)")
    p.add_argument(
        "--holdout", metavar="EXPR", help="boolean expression: rows held out of the fit and scored"
    )
    p.add_argument("--loo", action="store_true", help="leave-one-run-out error")
    p.add_argument("--huber-delta", type=float, default=1e-3,
                   help="Huber loss threshold on log residuals (larger = closer to least squares)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap resamples")
    add_plot_option(p, "fit.png", "a log-log figure of the data and the fitted laws")
    p.add_argument("--save", metavar="FIT.json",
                   help="save the fit(s) for clipscale predict (default: not saved)")
    add_json_flag(p)
    p.set_defaults(handler=_fit)


def add_plot_option(p: Any, name: str, what: str) -> None:
    """`--plot [FILE]` of fit and isoflop: one form, the figure's name optional."""
    p.add_argument("--plot", nargs="?", const=name, metavar="FILE",
                   help=f"write {what} to FILE (.png, .svg or .pdf; --plot alone: {name}) "
                   "(default: no figure)")


def add_max_passes_option(p: Any) -> None:
    """`--max-passes N` (fit, compare, isoflop): one meaning, `clipscale.fit.rows.leave_out_passes`."""
    p.add_argument(
        "--max-passes",
        type=float,
        metavar="N",
        help="leave out rows with more than N passes over their unique data (samples_seen / data_size), "
        "as a study's [fit] max_passes does (default: keep every row; studies use 10)",
    )


def add_law_options(p: Any, *, y_required: bool) -> None:
    """The options that say which law is fitted to which points (`fit` and `compare`)."""
    p.add_argument(
        "--law",
        default="power",
        help="power, frontier (= power on the cherti frontier), saturating, offset, chinchilla, joint, "
        "data-constrained",
    )
    p.add_argument(
        "--frontier",
        default="none",
        help="points the law is fitted to: none (all), cherti (5 equal log C bins), pareto (geometric "
        "bins, decreasing minima), hull (lower convex hull in log-log); needs --C (default: none)",
    )
    p.add_argument(
        "--frontier-bins",
        type=int,
        metavar="N",
        help="pareto/cherti: N bin edges from the smallest to the largest C (N - 1 bins); Nezhurina et "
        "al. take N = int(log2(C_max / 1500)), C in GFLOPs (default: cherti 5 equal bins of log C, pareto "
        "bins a factor 2 wide)",
    )
    p.add_argument(
        "--fit-where",
        metavar="EXPR",
        help="boolean expression: which rows are fitted, applied after the frontier (default: every row)",
    )
    p.add_argument(
        "--objective",
        default="huber-log",
        choices=["huber-log", "squares-log", "squares"],
        help="huber-log: Huber (--huber-delta) on log residuals; squares-log: least squares on log "
        "residuals; squares: least squares on y itself (as scipy curve_fit)",
    )
    p.add_argument(
        "--fix", nargs="+", metavar="KEY=VALUE", default=[], help="hold parameters fixed, e.g. alpha=0.35"
    )
    p.add_argument(
        "--link",
        default="error",
        help="scale the law of an error is fitted on: error (E itself), neglog (-log "
        "accuracy), odds, boxcox:LAM, or auto (the Box-Cox lambda in [-1, 1] that, fitted on the smaller "
        "model sizes, best predicts the next; E for laws without N)",
    )
    for key, what in (
        ("C", "compute"),
        ("N", "model size"),
        ("D", "data (samples/tokens)"),
        ("U", "unique samples"),
        ("S", "samples seen"),
    ):
        p.add_argument(f"--{key}", help=f"{what}: column name or expression over the columns")
    p.add_argument("--y", required=y_required, help="error column or expression (accuracy with --error)")
    p.add_argument("--error", action="store_true", help="y is accuracy-like: fit 1 - y")
    p.add_argument("--loss", action="store_true", help="y is a positive loss, not an error in (0, 1]")
    p.add_argument("--where", help="boolean expression selecting rows (default: every row)")
    p.add_argument("--by", help="fit one law per value of this column and compare (default: one law)")
    p.add_argument("--run", help="column identifying runs (bootstrap and --loo resample/leave out runs) "
                   "(default: every row is its own run)")


def _register_predict(subparsers: Any) -> None:
    p = subparsers.add_parser("predict", help="predict error (with CI) or allocate compute from a saved fit")
    p.add_argument("fit", help="FIT.json written by clipscale fit --save")
    p.add_argument("--group", help="which fit of a document of several: its group name (a study's: "
                   "DATASET/METRIC/DISTRIBUTION/LAW) or an unambiguous tail of it, e.g. uniform/frontier "
                   "(default: the only one)")
    for key in ("C", "N", "D", "U", "S"):
        p.add_argument(f"--{key}", help=f"{key} value(s), comma-separated")
    p.add_argument("--budget", type=float,
                   help="compute budget for the compute-optimal allocation (default: no allocation)")
    p.add_argument("--ladder", help="comma-separated model sizes N to choose among (default: continuous N)")
    p.add_argument("--k", type=float, default=1.0, help="budget = k·N·D (6 for LLM FLOPs; 1 for CLIP GMACs)")
    add_json_flag(p)
    p.set_defaults(handler=_predict)


def _register_reproduce(subparsers: Any) -> None:
    p = subparsers.add_parser("reproduce", help="reproduce a published scaling analysis")
    p.add_argument("study", choices=["cherti2023"], help="the published analysis (Cherti et al. 2023)")
    p.add_argument("--data", required=True, help="directory with the paper's tables (e.g. ../shared/paper)")
    p.add_argument("--out", help="write figures (PNG/SVG) and CSV tables here (default: print the results "
                   "only, no figures or tables)")
    p.add_argument(
        "--targets",
        help="comma-separated downstream datasets (default: imagenet1k,mscoco_captions,flickr30k)",
    )
    p.add_argument("--bootstrap", type=int, default=200, help="refits for the figure CI bands (with --out)")
    p.add_argument(
        "--link", default="error", help="scale of the joint law (as clipscale fit --link; auto: per fold)"
    )
    add_json_flag(p)
    p.set_defaults(handler=_reproduce)


def _fit(args: argparse.Namespace) -> int:
    from clipscale.fit.plot import check_figure_path
    from clipscale.fit.rows import column, leave_out_passes, load_table
    from clipscale.fit.table import fit_table_results
    from clipscale.progress import print_progress

    if args.plot:
        check_figure_path(args.plot)
    df = load_table(args.table)
    df, passes_note = leave_out_passes(df, args.max_passes, args.where)
    doc, results = fit_table_results(
        df,
        law=args.law,
        C=args.C,
        N=args.N,
        D=args.D,
        U=args.U,
        S=args.S,
        y=args.y,
        by=args.by,
        where=args.where,
        error=args.error,
        bootstrap=args.bootstrap,
        holdout=args.holdout,
        loo=args.loo,
        seed=args.seed,
        run=args.run,
        huber_delta=args.huber_delta,
        loss=args.loss,
        frontier=args.frontier,
        fix=parse_fix(args.fix),
        link=args.link,
        objective=args.objective,
        frontier_bins=args.frontier_bins,
        fit_where=args.fit_where,
        progress=print_progress,  # stderr: stdout stays the text or the one JSON document
    )
    if args.save:
        from clipscale.fit.result import save_fits

        save_fits(args.save, results, by=args.by)
    if args.plot:
        from clipscale.fit.laws import get_law
        from clipscale.fit.plot import plot_table_fits

        keys = get_law(args.law).inputs
        series = []
        for g, r, rows in results:
            yv = column(rows, args.y, "y")
            x = {k: column(rows, getattr(args, k), k) for k in keys}
            series.append((g, r, x, 1 - yv if args.error else yv))
        plot_table_fits(args.plot, series, x_label=args.C or "C", y_label="error" if args.error else args.y)
    from clipscale.fit.text import print_fit_text

    return emit_document(doc, passes_note, as_json=args.json, print_text=print_fit_text)


def emit_document(doc: dict[str, Any], passes_note: dict[str, Any] | None, *, as_json: bool,
                  print_text: Callable[[dict[str, Any]], None]) -> int:
    """The end of `fit`, `compare` and `isoflop`: the `--max-passes` note in the document (`passes`), then
    the document as JSON or as its text with the note after it."""
    from clipscale.io import dumps

    if passes_note:
        doc["passes"] = passes_note
    if as_json:
        print(dumps(doc, indent=2))
        return 0
    print_text(doc)
    if passes_note:
        print(f"note: {passes_note['text']}")
    return 0


def parse_fix(items: list[str]) -> dict[str, float]:
    from clipscale.errors import ClipscaleError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ClipscaleError(
                f"--fix {item!r}: expected KEY=VALUE with a number, e.g. alpha=0.35"
            ) from None
    return out


def _floats(text: str | None, name: str) -> list[float] | None:
    from clipscale.errors import ClipscaleError

    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ClipscaleError(f"--{name} {text!r}: expected comma-separated numbers") from None


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from clipscale.fit.laws import get_law
    from clipscale.fit.predict import load_fit, optimal_allocation, predict_with_ci
    from clipscale.io import dumps

    fit = load_fit(args.fit, args.group)
    law = get_law(fit.law)
    out: dict[str, Any] = {"law": fit.law, "params": fit.params}
    given = {k: _floats(getattr(args, k), k) for k in law.inputs}
    if all(v is not None for v in given.values()):
        arrays = np.broadcast_arrays(*[np.asarray(v, float) for v in given.values()])
        out["prediction"] = predict_with_ci(fit, dict(zip(given, arrays, strict=True)))
    if args.budget is not None:
        unique = _floats(args.U, "U")
        out["allocation"] = optimal_allocation(
            fit,
            args.budget,
            ladder=_floats(args.ladder, "ladder"),
            k=args.k,
            unique=unique[0] if unique else None,
        )
    if len(out) == 2:
        from clipscale.errors import ClipscaleError

        raise ClipscaleError(f"give the inputs {', '.join('--' + k for k in law.inputs)} and/or --budget")
    if args.json:
        print(dumps(out, indent=2))
    else:
        from clipscale.fit.text import print_prediction_text

        print_prediction_text(out)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from clipscale.fit.reproduction.reproduce import reproduce_cherti2023
    from clipscale.io import dumps
    from clipscale.progress import print_progress

    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    doc = reproduce_cherti2023(
        args.data, targets=targets, out=args.out, bootstrap=args.bootstrap, link=args.link,
        progress=print_progress,
    )
    if args.json:
        print(dumps(doc, indent=2))
        return 0
    for f in doc["fits"]:
        print(
            f"{f['target']:>20} {f['source']:>8} {f['law']:>8}: "
            f"E = {f['A']:.3g}·C^{f['alpha']:.3f} (n={f['n']})"
        )
    for t, v in doc["prediction_mae_pct"].items():
        print(f"{t:>20} prediction table MAE {v:.2f} points")
    for j in doc["joint"]:
        print(
            f"{j['target']:>20} joint LOO {j['loo_mae_pct']:.2f} / "
            f"holdout {j['holdout_mae_pct']:.2f} points; "
            f"frontier LOO {j['frontier_loo_mae_pct']:.2f} / holdout {j['frontier_holdout_mae_pct']:.2f}"
        )
    sys.stdout.flush()
    return 0
