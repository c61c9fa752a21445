"""`--link auto` against the error scale on every target of the paper's table, and each target's noise floor.

For each `downstream_dataset`: leave-one-run-out and fit-up-to-L/14-predict-H/14+g/14 MAE (accuracy points)
of the `joint` law over the 29 OpenCLIP runs, fitted to E (`--link error`, the earlier default) and with
`--link auto` (fit.estimation.link; the link chosen again inside every fold, so the figures are those of the
whole procedure), plus the link auto picks on all 29 runs and on the holdout's training runs.

Noise floor: no two runs of the table repeat a configuration, so run-to-run noise is estimated from the
runs that share model and dataset at 3B, 13B and 34B samples: the middle run's distance from the line
through the outer two (in log samples seen), scaled to unit variance, minus its mean over the 9 groups (a
curvature common to them). sigma is their standard deviation (8 degrees of freedom; 90 % CI from the
chi-square); sigma * sqrt(2/pi) is the mean |error| that any predictor independent of a run's own noise
makes on that run, whatever the law (E|eps + eta| >= E|eps| for eta independent of eps, mean zero).

Seen floor (`seen_holdout`, `seen_lam`): the joint law fitted to all 29 runs, H/14 and g/14 included, and
its MAE on those two, the smallest over the Box-Cox grid of links. Where it exceeds 0.5, the two runs pull
against the others even when they are fitted: a fit that has not seen them has nothing that pulls it
within 0.5 of them.

`--synthetic`: the cost of choosing. Runs of a known joint law (4 model sizes x 3 datasets x 3 samples
seen, the parameters of tests/test_fit_link.py) with log-normal noise, the law holding either in E or in
-log(accuracy); per noise level and seed, how often auto picks the true scale and the MAE (points) at two
larger runs (N = 532.9 at 3.4e10 samples, N = 1500 at 6.8e10, U = 2e9) of `--link error` and `auto`.

Run: .venv/bin/python bench/bench_link_auto.py [--targets a,b] [--jobs 2] [--csv out.csv]
     (~25 s per target on one core)
     .venv/bin/python bench/bench_link_auto.py --synthetic [--seeds 12]   (~2 min)
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from scipy import stats

from clipscale.errors import ClipscaleError
from clipscale.fit import fit_law
from clipscale.fit.estimation.link import LAMBDAS, link_name
from clipscale.fit.estimation.points import prepare
from clipscale.fit.estimation.validate import validate_fit
from clipscale.fit.laws import get_law
from clipscale.fit.reproduction.paper import HOLDOUT_ARCHS, joint_inputs, load_paper, target_rows

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "paper")
AGGREGATES = ("imagenet_robustness", "vtab", "vtab+")


def noise_floor(ours: pd.DataFrame) -> dict[str, float]:
    """sigma of run-to-run noise in accuracy points (with a 90 % CI) and the MAE floor it implies."""
    d = []
    for _, g in ours.groupby(["arch", "upstream_dataset"]):
        if len(g) != 3:
            continue
        g = g.sort_values("samples_seen")
        x, y = np.log(g.samples_seen.to_numpy()), 100 * g.E.to_numpy()
        t = (x[1] - x[0]) / (x[2] - x[0])
        w = np.array([-(1 - t), 1.0, -t])
        d.append(float(w @ y) / float(np.linalg.norm(w)))
    k = len(d)
    sigma = float(np.std(d, ddof=1))
    lo, hi = (sigma * np.sqrt((k - 1) / stats.chi2.ppf(q, k - 1)) for q in (0.95, 0.05))
    floor = np.sqrt(2 / np.pi)
    return {
        "groups": k,
        "sigma": sigma,
        "sigma_lo": lo,
        "sigma_hi": hi,
        "floor": sigma * floor,
        "floor_lo": lo * floor,
    }


def one_target(args: tuple[str, str]) -> dict[str, object]:
    data, target = args
    results, _ = load_paper(data)
    try:
        rows = target_rows(results, target)
    except ClipscaleError as exc:
        return {"target": target, "skipped": str(exc)}
    ours = rows[rows.source == "openclip"].reset_index(drop=True)
    inputs = joint_inputs(ours)
    mask = ours.arch.isin(HOLDOUT_ARCHS).to_numpy()
    prep = prepare(get_law("joint"), ours.E.to_numpy(), inputs)
    rec: dict[str, object] = {"target": target}
    for link in ("error", "auto"):
        val = validate_fit(prep, delta=1e-3, link=link, holdout_mask=mask, loo=True)
        rec[f"{link}_loo"], rec[f"{link}_holdout"] = val["loo"]["mae_pct"], val["holdout"]["mae_pct"]
        if link == "auto":
            rec["link_holdout"] = val["holdout"]["link"]["name"]
    rec["link_all"] = link_name(fit_law("joint", y=ours.E.to_numpy(), link="auto", **inputs).link)
    rec.update(seen_floor(ours, mask))
    rec.update(noise_floor(ours))
    return rec


def seen_floor(ours: pd.DataFrame, mask: np.ndarray) -> dict[str, float]:
    """MAE (points) on the holdout runs of the joint law fitted with them, the best link of the grid."""
    y, inputs = ours.E.to_numpy(), joint_inputs(ours)
    best = {}
    for lam in LAMBDAS:
        try:
            fit = fit_law("joint", y=y, link=lam, **inputs)
        except ClipscaleError:
            continue
        best[lam] = 100 * float(np.abs(fit.predict(**inputs) - y)[mask].mean())
    lam = min(best, key=best.get)
    return {"seen_holdout": best[lam], "seen_lam": lam}


JOINT = {"A": 3.7, "alpha": 0.13, "beta": 0.09, "G": 3e9, "kappa": 0.12, "rho": 0.15, "gamma": 1.4}


def synthetic(seeds: int) -> None:
    law = get_law("joint")
    n, u, s = np.meshgrid([7.4, 20.6, 87.7, 191.0], [8e7, 4e8, 2e9], [3e9, 1.3e10, 3.4e10], indexing="ij")
    x = {"N": n.ravel(), "U": u.ravel(), "S": s.ravel()}
    big = {"N": np.array([532.9, 1500.0]), "U": np.array([2e9, 2e9]), "S": np.array([3.4e10, 6.8e10])}
    truths = {
        "E": (lambda v: v, -1.0),
        "-log(accuracy)": (lambda v: -np.expm1(-v), 0.0),
    }
    for scale, (to_error, lam) in truths.items():
        e, e_big = to_error(law.predict(JOINT, x)), to_error(law.predict(JOINT, big))
        for noise in (0.005, 0.02):
            right, mae = 0, {"error": [], "auto": []}
            for seed in range(seeds):
                y = e * np.exp(np.random.default_rng(seed).normal(0, noise, e.size))
                for link in ("error", "auto"):
                    fit = fit_law("joint", y=y, link=link, **x)
                    mae[link].append(100 * float(np.abs(fit.predict(**big) - e_big).mean()))
                    right += link == "auto" and fit.link == lam
            print(
                f"law in {scale}, noise {noise:.1%}: auto picked it in {right}/{seeds}; MAE at two larger "
                f"runs: error {np.mean(mae['error']):.3f}, auto {np.mean(mae['auto']):.3f} points",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--targets", help="comma-separated subset (default: all 41)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--csv")
    ap.add_argument("--synthetic", action="store_true", help="the known-law check instead of the table")
    ap.add_argument("--seeds", type=int, default=12)
    args = ap.parse_args()
    if args.synthetic:
        synthetic(args.seeds)
        return
    results, _ = load_paper(args.data)
    names = args.targets.split(",") if args.targets else sorted(results.downstream_dataset.unique())
    with ProcessPoolExecutor(args.jobs) as pool:
        recs = []
        for rec in pool.map(one_target, [(args.data, n) for n in names]):
            recs.append(rec)
            if "skipped" in rec:
                print(f"{rec['target']}: skipped ({rec['skipped']})", flush=True)
                continue
            print(
                f"{rec['target']:>28}: error {rec['error_loo']:.2f} / {rec['error_holdout']:.2f}  auto "
                f"{rec['auto_loo']:.2f} / {rec['auto_holdout']:.2f}  link {rec['link_all']} (holdout "
                f"{rec['link_holdout']})  noise sigma {rec['sigma']:.2f} [{rec['sigma_lo']:.2f}, "
                f"{rec['sigma_hi']:.2f}] floor {rec['floor']:.2f}  seen holdout {rec['seen_holdout']:.2f} "
                f"(lambda {rec['seen_lam']:g})",
                flush=True,
            )
    df = pd.DataFrame([r for r in recs if "skipped" not in r])
    if args.csv:
        df.to_csv(args.csv, index=False)
    if len(df) < 2:
        return
    clean = df[df[["error_loo", "auto_loo"]].min(axis=1) < 2.5]
    for name, part in (("all", df), ("scale cleanly (LOO < 2.5 either way)", clean)):
        print(
            f"{name} ({len(part)}): auto lower LOO on {(part.auto_loo < part.error_loo - 0.005).sum()}, "
            f"higher on {(part.auto_loo > part.error_loo + 0.005).sum()}; lower holdout on "
            f"{(part.auto_holdout < part.error_holdout - 0.005).sum()}, higher on "
            f"{(part.auto_holdout > part.error_holdout + 0.005).sum()}; medians LOO "
            f"{part.error_loo.median():.3f} -> {part.auto_loo.median():.3f}, holdout "
            f"{part.error_holdout.median():.3f} -> {part.auto_holdout.median():.3f}"
        )


if __name__ == "__main__":
    main()
