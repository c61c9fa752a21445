"""Time 1,000 bootstrap refits: the joint law on the 29 OpenCLIP ImageNet runs (issue 5: < 60 s on 2 cores),
the offset law on the paper's ImageNet frontier runs (pareto frontier retaken per resample) and on all
runs, and the isoFLOP analysis of the 245 Chinchilla runs (Epoch AI extraction).

Run: .venv/bin/python bench/bench_fit.py [--n 1000] [--data ../shared] [--only joint,offset,isoflop]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from clipscale.fit import fit_law
from clipscale.fit.analyses.isoflop import isoflop
from clipscale.fit.reproduction.paper import UNIQUE, load_paper, target_rows


def _timed(label: str, run: Callable[[], object]) -> object:
    t0 = time.perf_counter()
    out = run()
    print(f"{label}: {time.perf_counter() - t0:.2f} s (load average {os.getloadavg()[0]:.2f})")
    return out


def bench_joint(rows: pd.DataFrame, n: int) -> None:
    kw = {
        "y": rows.E.to_numpy(),
        "N": rows.gmacs.to_numpy(),
        "U": rows.upstream_dataset.map(UNIQUE).to_numpy(),
        "S": rows.samples_seen.to_numpy(),
    }
    _timed("joint fit (32 + 8 starts, --link error)", lambda: fit_law("joint", link="error", **kw))
    _timed("joint fit (--link auto: 9 links, forward checks)", lambda: fit_law("joint", link="auto", **kw))
    fit = _timed(f"joint fit + {n} bootstrap refits", lambda: fit_law("joint", bootstrap=n, seed=0, **kw))
    print(f"  {len(fit.bootstrap_params)} ok, {fit.bootstrap_failed} failed")
    for k, (lo, hi) in fit.ci.items():
        print(f"  {k:>16} = {fit.params.get(k, fit.derived.get(k)):.4g}  95% CI [{lo:.4g}, {hi:.4g}]")


def bench_offset(rows: pd.DataFrame, n: int) -> None:
    kw = {"y": rows.E.to_numpy(), "C": rows.gmacs_total.to_numpy()}
    for frontier in ("none", "pareto"):
        fit = _timed(
            f"offset fit + {n} bootstrap refits, frontier {frontier} ({len(rows)} runs)",
            lambda f=frontier: fit_law("offset", bootstrap=n, seed=0, frontier=f, **kw),
        )
        ci = ", ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in fit.ci.items())
        print(
            f"  {len(fit.bootstrap_params)} ok, {fit.bootstrap_failed} failed; at_bound {fit.at_bound}; {ci}"
        )


def bench_isoflop(path: Path, n: int) -> None:
    df = pd.read_csv(path)
    cols = {"C": "`Training FLOP`", "N": "`Model Size`", "y": "loss", "k": 6.0}
    doc = _timed(
        f"isoflop + {n} bootstrap resamples ({len(df)} runs)", lambda: isoflop(df, bootstrap=n, **cols)
    )
    print(
        f"  a = {doc['a']:.4f} {doc['a_ci']}, b = {doc['b']:.4f} {doc['b_ci']}, "
        f"{doc['n_budgets_used']} budgets, {doc['bootstrap_failed']} failed resamples"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--only", default="joint,offset,isoflop")
    args = ap.parse_args()
    only = set(args.only.split(","))
    results, _ = load_paper(os.path.join(args.data, "paper"))
    rows = target_rows(results, "imagenet1k")
    ours = rows[rows.source == "openclip"]
    if "joint" in only:
        bench_joint(ours, args.n)
    if "offset" in only:
        bench_offset(ours, args.n)
    if "isoflop" in only:
        bench_isoflop(Path(args.data) / "external" / "chinchilla_svg_extracted.csv", args.n)


if __name__ == "__main__":
    main()
