"""Time 1,000 bootstrap refits of the joint law on the 29 OpenCLIP ImageNet runs (issue 5: < 60 s on 2 cores).

Run: .venv/bin/python bench/bench_fit.py [--n 1000] [--data ../shared/paper]
"""

from __future__ import annotations

import argparse
import os
import time

from clipscale.fit import fit_law
from clipscale.fit.reproduce import UNIQUE, load_paper, target_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "paper"))
    args = ap.parse_args()
    results, _ = load_paper(args.data)
    rows = target_rows(results, "imagenet1k")
    ours = rows[rows.source == "openclip"]
    kw = {
        "y": ours.E.to_numpy(),
        "N": ours.gmacs.to_numpy(),
        "U": ours.upstream_dataset.map(UNIQUE).to_numpy(),
        "S": ours.samples_seen.to_numpy(),
    }
    t0 = time.perf_counter()
    fit_law("joint", **kw)
    t1 = time.perf_counter()
    fit = fit_law("joint", bootstrap=args.n, seed=0, **kw)
    t2 = time.perf_counter()
    print(
        f"joint fit (32 starts): {t1 - t0:.2f} s; fit + {args.n} bootstrap refits: {t2 - t1:.2f} s "
        f"({len(fit.bootstrap_params)} ok, {fit.bootstrap_failed} failed); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for k, (lo, hi) in fit.ci.items():
        print(f"  {k:>16} = {fit.params.get(k, fit.derived.get(k)):.4g}  95% CI [{lo:.4g}, {hi:.4g}]")


if __name__ == "__main__":
    main()
