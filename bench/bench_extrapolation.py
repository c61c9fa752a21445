"""Coverage of the study extrapolation check's interval (docs/scaling-laws.md, "Does the law predict
the largest run?"): how often the largest compute group's measured error lies in the refit's 95 %
interval, for the prediction interval (bootstrap + residual scatter) and the bootstrap-only interval
of the mean law.

Synthetic isoFLOP grids like the demo's: 3 sizes x 5 budgets, E = 0.9 C^-0.1 times a size penalty
that grows away from the compute-optimal size, times log-normal scatter SIGMA per run.

    .venv/bin/python bench/bench_extrapolation.py LAW FRONTIER SIGMA TRIALS
    e.g. .venv/bin/python bench/bench_extrapolation.py frontier none 0.03 300
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from clipscale.fit import fit_table_results
from clipscale.study.extrapolation import check_largest


def main(law: str, frontier: str, sigma: float, trials: int) -> None:
    rng = np.random.default_rng(1)
    hits = {"prediction": 0, "mean": 0}
    n = 0
    for t in range(trials):
        rows = []
        for budget in (10, 20, 40, 80, 160):
            for size in (0.034, 0.22, 0.6):
                penalty = 1 + 0.05 * np.log(size / (0.05 * budget**0.5)) ** 2
                error = 0.9 * budget**-0.1 * penalty * np.exp(rng.normal(0, sigma))
                rows.append({"run_id": f"{budget}-{size}", "compute": budget * (1 + rng.uniform(-0.02, 0.02)),
                             "compute_group": float(budget), "params": size, "error": error})

        def refit(sub: pd.DataFrame, seed: int = t) -> object:
            options = {"frontier": frontier} if frontier != "none" else {}
            return fit_table_results(sub, law=law, C="compute", y="error", bootstrap=100, run="run_id",
                                     seed=seed, **options)[1][0][1]

        check = check_largest(pd.DataFrame(rows), inputs={"C": "compute"}, n_params=2,
                              on_frontier=law == "frontier" or frontier != "none", refit=refit, seed=t)
        c = check["extrapolation_check"]
        if c is None or c["verdict"] is None:
            continue
        n += 1
        hits["prediction"] += c["ci_low"] <= c["measured"] <= c["ci_high"]
        hits["mean"] += c["mean_ci"][0] <= c["measured"] <= c["mean_ci"][1]
    print(f"law {law}, frontier {frontier}, sigma {sigma}: {n} checks; coverage "
          + ", ".join(f"{k} {v / max(n, 1):.3f}" for k, v in hits.items()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
