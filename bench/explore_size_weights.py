"""The joint law fitted with rows weighted by model size, on the aggregate targets (issue 12), rerunnable.

A law fitted to predict larger models might lean on the larger of the runs it has: each row's Huber term is
weighted by (N / N_max)^p (N = GMACs; weights scaled to mean 1), p = 0 being the project's unweighted fit.
Per target and p: leave-one-run-out and fit-up-to-L/14-predict-H/14+g/14 MAE in accuracy points over the
29 OpenCLIP runs, the errors unweighted, every refit warm-started from the weighted fit of all runs plus
one grid start (as fit.estimation.validate does), on the scale `--link` names (fit.estimation.link).

Run: .venv/bin/python bench/explore_size_weights.py [--link error|neglog|boxcox:LAM] [--powers 0,0.5,1]
     [--targets a,b] (~20 s per target and power on one core)
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from clipscale.fit.estimation.estimate import Optimum, fit_prepared
from clipscale.fit.estimation.link import link_name, parse_link
from clipscale.fit.estimation.points import Prepared, prepare
from clipscale.fit.estimation.validate import _errors, _starts
from clipscale.fit.laws import get_law
from clipscale.fit.reproduction.paper import HOLDOUT_ARCHS, joint_inputs, load_paper, target_rows

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "paper")
TARGETS = "imagenet1k,mscoco_captions,flickr30k,imagenet_robustness,vtab,vtab+"
DELTA = 1e-3


def _fit(prep: Prepared, w: np.ndarray, start: Optimum | None = None) -> Optimum:
    starts = None if start is None else _starts(prep, start, DELTA)
    return fit_prepared(prep, delta=DELTA, weights=w * len(w) / w.sum(), starts=starts)


def checks(prep: Prepared, n: np.ndarray, holdout: np.ndarray, p: float) -> tuple[float, float]:
    """(LOO MAE, holdout MAE) in accuracy points with rows weighted by (N / N_max)^p."""
    w = (n / n.max()) ** p
    full = _fit(prep, w)
    kept = ~holdout
    ho = _fit(prep.subset(kept), w[kept], full)
    ho_mae = 100 * float(np.abs(_errors(prep, ho.params, holdout)).mean())
    loo = []
    for i in range(prep.n):
        rest = np.arange(prep.n) != i
        fold = _fit(prep.subset(rest), w[rest], full)
        loo.append(abs(float(_errors(prep, fold.params, ~rest)[0])))
    return 100 * float(np.mean(loo)), ho_mae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--targets", default=TARGETS)
    ap.add_argument("--link", default="error")
    ap.add_argument("--powers", default="0,0.5,1")
    args = ap.parse_args()
    lam = parse_link(args.link)
    if lam is None:
        raise SystemExit("--link auto is not supported here: name one scale")
    powers = [float(x) for x in args.powers.split(",")]
    results, _ = load_paper(args.data)
    print(f"link {link_name(lam)}; LOO / H/14+g/14 MAE (points) per power p of the weights (N / N_max)^p")
    for target in args.targets.split(","):
        rows = target_rows(results, target)
        ours = rows[rows.source == "openclip"].reset_index(drop=True)
        inputs = joint_inputs(ours)
        prep = prepare(get_law("joint"), ours.E.to_numpy(), inputs).with_link(lam)
        holdout = ours.arch.isin(HOLDOUT_ARCHS).to_numpy()
        cells = []
        for p in powers:
            loo, ho = checks(prep, inputs["N"], holdout, p)
            cells.append(f"p={p:g}: {loo:.2f} / {ho:.2f}")
        print(f"{target:>20}  " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
