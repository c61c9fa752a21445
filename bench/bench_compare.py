"""Time of `clipscale compare` with 1,000 bootstrap refits per group (issue 19): two groups of runs drawn
from crossing saturating laws, fitted and compared from the table, then compared again from the saved
fits (no refits: only the predictions under the saved refits and the crossover search).

    .venv/bin/python bench/bench_compare.py [--law saturating] [--refits 1000] [--runs 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clipscale.fit.analyses.compare import compare_saved, compare_table
from clipscale.fit.result import save_fits
from clipscale.fit.table import fit_table_results


def table(runs: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    c = np.geomspace(1e3, 1e9, runs)
    laws = {"a": (0.05, 2.0, -0.2), "b": (0.08, 1.0, -0.15)}
    return pd.DataFrame([{"g": g, "C": x, "err": (e + a * x**al) * np.exp(rng.normal(0, 0.02))}
                         for g, (e, a, al) in laws.items() for x in c])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--law", default="saturating")
    ap.add_argument("--refits", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[:3]}")
    df = table(a.runs)
    opts = {"by": "g", "law": a.law, "C": "C", "y": "err"}
    t0 = time.perf_counter()
    doc = compare_table(df, bootstrap=a.refits, **opts)
    t_table = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        _, results = fit_table_results(df, bootstrap=a.refits, **opts)
        path = Path(tmp) / "fits.json"
        save_fits(path, results, by="g")
        t0 = time.perf_counter()
        compare_saved(str(path))
        t_saved = time.perf_counter() - t0
    pair = doc["pairs"][0]
    print(f"{a.law}, 2 groups x {a.runs} runs, {a.refits} refits per group: compare TABLE {t_table:.2f} s "
          f"(fits + refits + comparison), compare FITS.json {t_saved:.2f} s; "
          f"{pair['n_refits']} paired refits; "
          f"crossover {pair['crossover']['C']:.4g} {pair['crossover']['ci']}")


if __name__ == "__main__":
    main()
