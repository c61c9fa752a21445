"""Estimator variants of the `joint` law tried on the aggregate targets (issue 12), rerunnable.

LOO and fit-up-to-L/14-predict-H/14+g/14 MAE in accuracy points over the 29 OpenCLIP runs, project
estimator (Huber delta 1e-3, L-BFGS-B, refits warm-started from the full optimum plus the best grid point).
The law is fitted to a Box-Cox transform of the accuracy, g_lam(E) = ((1 - E)^-lam - 1)/lam: lam = -1 is
E itself (the adopted estimator), 0 is -log(accuracy), 1 the odds E/(1 - E). Modes:
  fixed    one lam for every target (unweighted fit of g(E), as bench_joint_targets.py --link)
  profile  lam as a shape parameter of the law, E = g^-1(J): fits weighted so Huber is on log E, lam the
           grid value with the lowest Huber of log E on the training runs (nested in each fold)
  cv       lam chosen by leave-one-out MAE on the training runs (holdout only; LOO nested is too slow)
  parts    an aggregate as the mean of the joint laws of its datasets (vtab: VTAB-19, vtab+: the 35
           classification sets, imagenet_robustness: the 5 shifts; each composition checked exactly)

Run: .venv/bin/python bench/explore_joint_aggregates.py MODE [--lams -1,-0.5,0] [--targets ...]
     (~25 s per target and mode on one core)
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from clipscale.fit.estimation.estimate import fit_prepared, grid_starts
from clipscale.fit.estimation.points import prepare
from clipscale.fit.estimation.validate import holdout, leave_one_run_out
from clipscale.fit.laws import get_law
from clipscale.fit.reproduction.paper import HOLDOUT_ARCHS, UNIQUE, load_paper, target_rows

TARGETS = "imagenet1k,mscoco_captions,imagenet_robustness,vtab,vtab+"
AGGREGATES = ("vtab", "vtab+", "imagenet_robustness")
SHIFTS = ["imagenet-a", "imagenet-r", "imagenet_sketch", "imagenetv2", "objectnet"]
DELTA = 1e-3
LAW = get_law("joint")


def g(e: np.ndarray, lam: float) -> np.ndarray:
    return -np.log1p(-e) if lam == 0 else ((1 - e) ** (-lam) - 1) / lam


def ginv(t: np.ndarray, lam: float) -> np.ndarray:
    return -np.expm1(-t) if lam == 0 else 1 - np.maximum(1 + lam * t, 1e-300) ** (-1 / lam)


def elasticity(e: np.ndarray, lam: float) -> np.ndarray:
    """d log g / d log E: weights 1/elasticity make Huber of log g(E) that of log E to first order."""
    return e * (1 - e) ** (-lam - 1) / g(e, lam)


def huber(r: np.ndarray) -> float:
    a = np.abs(r)
    return float(np.where(a <= DELTA, 0.5 * r * r, DELTA * (a - 0.5 * DELTA)).sum())


class Target:
    """One target's runs and, per lam, the prepared fit of g_lam(E) and its full-data optimum."""

    def __init__(self, results: pd.DataFrame, name: str, lams: list[float], weighted: bool) -> None:
        rows = target_rows(results, name)
        o = rows[rows.source == "openclip"].sort_values("name").reset_index(drop=True)
        self.e, self.n = o.E.to_numpy(), len(o)
        self.mask = o.arch.isin(HOLDOUT_ARCHS).to_numpy()
        inputs = {
            "N": o.gmacs.to_numpy(),
            "U": o.upstream_dataset.map(UNIQUE).to_numpy(),
            "S": o.samples_seen.to_numpy(),
        }
        self.prep = {lam: prepare(LAW, g(self.e, lam), inputs, loss=True) for lam in lams}
        self.w = {lam: 1 / elasticity(self.e, lam) if weighted else np.ones(self.n) for lam in lams}
        self.full = {lam: fit_prepared(p, delta=DELTA, weights=self.w[lam]) for lam, p in self.prep.items()}

    def fit(self, lam: float, train: np.ndarray) -> tuple[float, np.ndarray]:
        """Huber of log E on the training runs and |error| (points) at every run, fitted on `train`."""
        sub = self.prep[lam].subset(train)
        starts = np.vstack([self.full[lam].theta, grid_starts(sub, DELTA, 1)])
        opt = fit_prepared(sub, delta=DELTA, weights=self.w[lam][train], starts=starts)
        pred = ginv(LAW.predict(opt.params, self.prep[lam].raw), lam)
        return huber(np.log(self.e[train] / pred[train])), 100 * np.abs(pred - self.e)

    def loo(self, lam: float, train: np.ndarray) -> float:
        idx = np.flatnonzero(train)
        return float(np.mean([self.fit(lam, train & (np.arange(self.n) != i))[1][i] for i in idx]))


def run_fixed(t: Target, lams: list[float]) -> str:
    cells = []
    for lam in lams:
        loo = t.loo(lam, np.ones(t.n, bool))
        cells.append(f"lam {lam:g}: {loo:.2f} / {t.fit(lam, ~t.mask)[1][t.mask].mean():.2f}")
    return "  ".join(cells)


def run_profile(t: Target, lams: list[float]) -> str:
    def chosen(train: np.ndarray) -> tuple[float, np.ndarray]:
        fits = {lam: t.fit(lam, train) for lam in lams}
        lam = min(fits, key=lambda k: fits[k][0])
        return lam, fits[lam][1]

    lam_h, err_h = chosen(~t.mask)
    loo = [chosen(np.arange(t.n) != i) for i in range(t.n)]
    picked = pd.Series([lam for lam, _ in loo]).value_counts().to_dict()
    return (
        f"nested LOO {np.mean([err[i] for i, (_, err) in enumerate(loo)]):.2f} / holdout "
        f"{err_h[t.mask].mean():.2f} (lam {lam_h:g} on the training runs; LOO folds' lam {picked})"
    )


def run_cv(t: Target, lams: list[float]) -> str:
    scores = {lam: t.loo(lam, ~t.mask) for lam in lams}
    lam = min(scores, key=scores.get)
    return f"holdout {t.fit(lam, ~t.mask)[1][t.mask].mean():.2f} (lam {lam:g} by LOO on the training runs)"


def parts_of(results: pd.DataFrame, target: str) -> list[str]:
    names = sorted(results.downstream_dataset.unique())
    cls = [
        d
        for d in names
        if d not in AGGREGATES and d not in ("mscoco_captions", "flickr30k", "voc2007_multilabel")
    ]
    return {
        "imagenet_robustness": SHIFTS,
        "vtab+": cls,
        "vtab": [d for d in cls if d.startswith("vtab/") and d != "vtab/cifar10"] + ["sun397"],
    }[target]


def run_parts(results: pd.DataFrame, target: str) -> str:
    parts = parts_of(results, target)
    acc = results.pivot_table(index="name", columns="downstream_dataset", values="acc1")
    acc = acc[acc.index.isin(results[results.upstream_dataset != "CLIP-WIT"].name)]
    gap = float((acc[parts].mean(axis=1) - acc[target]).abs().max())
    loo, hold = [], []
    for p in parts:  # signed errors of each part, runs in the same (name) order
        t = Target(results, p, [-1.0], weighted=False)
        prep, full = t.prep[-1.0], t.full[-1.0]
        loo.append(leave_one_run_out(prep, delta=DELTA, full=full)["errors"])
        hold.append(holdout(prep, t.mask, delta=DELTA, full=full)["errors"])
    loo_pts = 100 * np.abs(np.mean(loo, axis=0)).mean()
    hold_pts = 100 * np.abs(np.mean(hold, axis=0)).mean()
    head = f"mean of {len(parts)} part laws (composition exact to {gap:.0e})"
    return f"{head}: LOO {loo_pts:.2f} / holdout {hold_pts:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("fixed", "profile", "cv", "parts"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "paper"))
    ap.add_argument("--targets", default=TARGETS)
    ap.add_argument("--lams", default=",".join(f"{x:g}" for x in np.arange(-2, 1.01, 0.25)))
    args = ap.parse_args()
    results, _ = load_paper(args.data)
    lams = [float(x) for x in args.lams.split(",")]
    for name in args.targets.split(","):
        if args.mode == "parts":
            line = run_parts(results, name) if name in AGGREGATES else "not an aggregate"
        else:
            t = Target(results, name, lams, weighted=args.mode == "profile")
            line = {"fixed": run_fixed, "profile": run_profile, "cv": run_cv}[args.mode](t, lams)
        print(f"{name}: {line}", flush=True)


if __name__ == "__main__":
    main()
