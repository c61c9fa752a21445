"""Peak memory and time of one fit on many rows (issue 20: `--law saturating` on 10^6 rows took 334 s and
peaked at 9.8 GB, from the n x grid matrices of the multi-start screen).

Each law is fitted in a fresh child process, so its peak RSS (`ru_maxrss`) is its own: the figure printed
is the child's peak minus its RSS just before the fit (data and imports), i.e. what fitting adds.

    .venv/bin/python bench/bench_fit_memory.py [--rows 1000000] [--laws saturating,offset,power]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(law: str, rows: int) -> None:
    import numpy as np

    from clipscale.fit import fit_law

    rng = np.random.default_rng(0)
    c = np.exp(rng.uniform(np.log(1e3), np.log(1e9), rows))
    y = (0.05 + 3.0 * c**-0.2) * np.exp(rng.normal(0, 0.02, rows))
    before = _rss_mb()
    t0 = time.perf_counter()
    fit = fit_law(law, y=y, C=c)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"law": law, "rows": rows, "seconds": round(wall, 2), "rss_before_mb": round(before),
                      "peak_rss_mb": round(peak), "added_mb": round(peak - before),
                      "params": {k: round(v, 5) for k, v in fit.params.items()}}))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--laws", default="saturating,offset,power")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.rows)
        return
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[:3]}")
    for law in a.laws.split(","):
        subprocess.run([sys.executable, __file__, "--child", law, "--rows", str(a.rows)], check=True)


if __name__ == "__main__":
    main()
