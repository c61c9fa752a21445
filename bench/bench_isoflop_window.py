"""Evidence for the isoFLOP default `--window` (clipscale.fit.analyses.isoflop): the exponent a of
N* ∝ C^a recovered from synthetic isoFLOP data with a known N*.

Loss L(N, D) = E + A/N^alpha + B/D^beta with C = 6·N·D (Hoffmann et al.'s published coefficients), so
N* = G·(C/6)^a exactly, a = beta / (alpha + beta). One fixed ladder of model sizes (factor 2 apart) is
used at every budget, as in practice, so the minimum sits off-centre: near the small end at small budgets
and near the large end at large ones. Log-normal noise of sigma on L. For each window (and every size)
and noise level: bias and RMSE of a over `--draws` noise draws, and how often a lands within ±0.02.

    .venv/bin/python bench/bench_isoflop_window.py [--draws 200]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from clipscale.fit.analyses.isoflop import isoflop

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
TRUE_A = BETA / (ALPHA + BETA)
LADDERS = {  # (sizes, drop runs with fewer than N/20 tokens: the sizes a real sweep would not train)
    "factor 2, 14 sizes, oversized dropped": (2.0 ** np.arange(24, 38), True),
    "factor sqrt2, 27 sizes, every size": (2.0 ** np.arange(24, 37.01, 0.5), False),
}
BUDGETS = 10.0 ** np.arange(18.0, 21.51, 0.5)  # 8 budgets


def table(sigma: float, rng: np.random.Generator, ladder: np.ndarray, drop: bool) -> pd.DataFrame:
    rows = []
    for c in BUDGETS:
        for n in ladder:
            d = c / (6 * n)
            if drop and d < n / 20:  # far too little data for the size: not trained, as in a real sweep
                continue
            loss = E + A / n**ALPHA + B / d**BETA
            rows.append({"C": c, "N": n, "L": loss * np.exp(rng.normal(0.0, sigma))})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args()
    windows: list[int | None] = [3, 4, 5, 7, None]
    print(f"true a = {TRUE_A:.4f}; {len(BUDGETS)} budgets")
    for name, (ladder, drop) in LADDERS.items():
        print(f"ladder: {name}")
        _ladder(ladder, drop, windows, args.draws)


def _ladder(ladder: np.ndarray, drop: bool, windows: list[int | None], n_draws: int) -> None:
    print(f"{'sigma':>6} {'window':>7} {'bias':>8} {'rmse':>8} {'|err|<0.02':>10} {'budgets':>8}")
    for sigma in (0.0, 0.002, 0.005, 0.01, 0.02):
        for w in windows:
            rng = np.random.default_rng(0)
            draws = 1 if sigma == 0 else n_draws
            est, used = [], []
            for _ in range(draws):
                doc = isoflop(table(sigma, rng, ladder, drop), C="C", N="N", y="L", k=6.0, window=w)
                est.append(doc["a"])
                used.append(doc["n_budgets_used"])
            err = np.array(est) - TRUE_A
            print(
                f"{sigma:>6} {w or 'all'!s:>7} {err.mean():>8.4f} {np.sqrt((err**2).mean()):>8.4f} "
                f"{np.mean(np.abs(err) < 0.02):>10.2f} {np.mean(used):>8.1f}"
            )


if __name__ == "__main__":
    main()
