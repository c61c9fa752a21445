"""The search behind the `joint` law (docs/scaling-laws.md, "How it was found"), rerunnable.

Every candidate is a log-sum-exp of terms linear in log-features, estimated with the project's own
estimator (Huber on log residuals, L-BFGS-B, `clipscale.fit.estimation.estimate`) and checked as `clipscale
reproduce` checks the adopted law: leave-one-run-out and fit-up-to-L/14-predict-H/14+g/14 MAE in accuracy
points over the 29 OpenCLIP runs. A term is the features it has a free exponent on; `[]` is a constant;
a feature written "*B" is a factor B^e shared by every term (one exponent). Exponents are free in
[-5, 5] here, where the project's `joint` law bounds alpha, beta, gamma >= 0: its row reads ImageNet
LOO 0.780 here against 0.793 from `clipscale reproduce`.

Features (logs): N = GMACs, Ni / Nt = image / text GMACs, S = samples seen, U = unique samples seen
min(U, S), R = epochs S/min(U, S), B = global batch size, lr = learning rate, small = [batch <= 34k].

Run: .venv/bin/python bench/explore_joint_forms.py [--targets imagenet1k,mscoco_captions] [--delta 1e-3]
     [--forms NAME ...]   (~10 s per form and target)
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
import pandas as pd

from clipscale.fit.estimation.estimate import fit_prepared
from clipscale.fit.estimation.points import prepare
from clipscale.fit.estimation.validate import holdout, leave_one_run_out
from clipscale.fit.laws import Law, get_law
from clipscale.fit.reproduction.paper import HOLDOUT_ARCHS, UNIQUE, load_paper, target_rows

FORMS: dict[str, list[list[str]]] = {
    "previous: A/N^a + B/S^b + G N^k/U^g": [["N"], ["S"], ["U", "N"]],
    "previous x B^e (batch size)": [["N"], ["S"], ["U", "N"], ["*B"]],
    "previous, S term x B^e": [["N"], ["S", "B"], ["U", "N"]],
    "previous, model term x B^e": [["N", "B"], ["S"], ["U", "N"]],
    "previous x e^(c [bs <= 34k])": [["N"], ["S"], ["U", "N"], ["*small"]],
    "previous x lr^e": [["N"], ["S"], ["U", "N"], ["*lr"]],
    "previous x B^e lr^e2": [["N"], ["S"], ["U", "N"], ["*B", "*lr"]],
    "A/N^a + B/(S^b1 U^b2)": [["N"], ["S", "U"]],
    "A/N^a + B N^k/(S^b1 U^b2)": [["N"], ["S", "U", "N"]],
    "same + E_inf": [["N"], ["S", "U", "N"], []],
    "A/N^a + B/(S^b1 U^b2) + G/S^g": [["N"], ["S", "U"], ["S"]],
    "A/N^a + B/S^b + G N^k S^s/U^g": [["N"], ["S"], ["U", "N", "S"]],
    "A/N^a + B/(S^b1 U^b2) + G N^k/U^g": [["N"], ["S", "U"], ["U", "N"]],
    "A/N^a + B/(S^b1 U^b2) + G N^k/(S^s U^g)": [["N"], ["S", "U"], ["S", "U", "N"]],
    "previous, model term A/(Ni^a1 Nt^a2)": [["Ni", "Nt"], ["S"], ["U", "N"]],
    "same, kappa on Ni": [["Ni", "Nt"], ["S"], ["U", "Ni"]],
    "A1/Ni^a1 + A2/Nt^a2 + B/S^b + G N^k/U^g": [["Ni"], ["Nt"], ["S"], ["U", "N"]],
    "A/(Ni^a1 Nt^a2) + B/S^b + G N^k S^s/U^g": [["Ni", "Nt"], ["S"], ["U", "N", "S"]],
    "A/(N^a S^b) + G N^k R^r/U^g (adopted)": [["N", "S"], ["N", "R", "U"]],
    "adopted, image/text model term": [["Ni", "Nt", "S"], ["N", "R", "U"]],
    "adopted + A2/N^a2": [["N", "S"], ["N", "R", "U"], ["N"]],
    "adopted + E_inf": [["N", "S"], ["N", "R", "U"], []],
    "A/(N^a S^b) + G R^r/U^g (kappa = 0)": [["N", "S"], ["R", "U"]],
}


def features(rows: pd.DataFrame, data: str) -> dict[str, np.ndarray]:
    """Every feature as a positive raw input whose log is the feature (prepare() takes logs)."""
    info = pd.read_csv(os.path.join(data, "trained_models_info.csv"))
    arch = pd.read_csv(os.path.join(data, "arch_info.csv")).set_index("model")
    batch = rows.name.map(dict(zip(info.name, info.gpus * info.local_bs, strict=True))).to_numpy(float)
    lr = rows.name.map(dict(zip(info.name, info.lr, strict=True))).to_numpy(float)
    s = rows.samples_seen.to_numpy(float)
    u = np.minimum(rows.upstream_dataset.map(UNIQUE).to_numpy(float), s)
    return {
        "N": rows.gmacs.to_numpy(float),
        "Ni": rows.arch.map(arch.image_gmacs).to_numpy(float),
        "Nt": rows.arch.map(arch.text_gmacs).to_numpy(float),
        "S": s,
        "U": u,
        "R": s / u,
        "B": batch,
        "lr": lr,
        "small": np.exp((batch <= 34_000).astype(float)),
    }


def _coefficients(term: int, n_terms: int) -> list[str]:
    return [f"c{m}" for m in (range(n_terms) if term < 0 else [term])]


def make_law(name: str, terms: list[list[str]]) -> Law:
    """An lse law whose term m is c_m + sum of theta_k * (log x_k - centre_k) over its features."""
    common = [f[1:] for t in terms for f in t if f.startswith("*")]
    terms = [t for t in terms if not any(f.startswith("*") for f in t)]
    inputs = tuple(dict.fromkeys([*(f for t in terms for f in t), *common]))
    # (term, feature): f None is the term's coefficient; term -1 is a factor shared by every term
    slots = [(m, f) for m, t in enumerate(terms) for f in (None, *t)] + [(-1, f) for f in common]
    names = tuple(f"c{m}" if f is None else f"{f}{'*' if m < 0 else m}" for m, f in slots)

    def jac(theta: np.ndarray, logx: dict, raw: dict, centre: dict) -> np.ndarray:
        n = next(iter(logx.values())).shape[0] if logx else 1
        dt = np.zeros((n, len(terms), len(slots)))
        for j, (m, f) in enumerate(slots):
            if m < 0:
                dt[:, :, j] = logx[f][:, None]
            else:
                dt[:, m, j] = 1.0 if f is None else logx[f]
        return dt

    def term_values(theta: np.ndarray, logx: dict, raw: dict, centre: dict) -> np.ndarray:
        dt = jac(theta, logx, raw, centre)
        return np.einsum("nmp,...p->...nm", dt, np.asarray(theta))

    def to_params(theta: np.ndarray, centre: dict) -> dict[str, float]:
        out = dict(zip(names, map(float, theta), strict=True))
        for j, (m, f) in enumerate(slots):  # un-centre: move theta_k * centre_k into the coefficient(s)
            if f is not None:
                for c in _coefficients(m, len(terms)):
                    out[c] -= float(theta[j]) * centre[f]
        return out

    def from_params(p: dict[str, float], centre: dict) -> np.ndarray:
        theta = np.array([p[k] for k in names])
        for j, (m, f) in enumerate(slots):
            if f is not None:
                for c in _coefficients(m, len(terms)):
                    theta[names.index(c)] += theta[j] * centre[f]
        return theta

    def grid(logy: np.ndarray) -> list[np.ndarray]:
        lo, hi = float(logy.min()), float(logy.max())
        return [np.array([lo - 1.0, hi]) if f is None else np.array([-0.2, 0.2]) for _, f in slots]

    bounds = tuple((-60.0, 60.0) if f is None else (-5.0, 5.0) for _, f in slots)
    return dataclasses.replace(
        get_law("joint"),
        name=name,
        inputs=inputs,
        params=names,
        theta=names,
        bounds=bounds,
        terms=term_values,
        jac=jac,
        grid=grid,
        to_params=to_params,
        from_params=from_params,
        extra_grid=None,  # joint's extra regions are written for its own parameters
    )


def check(law: Law, rows: pd.DataFrame, feats: dict[str, np.ndarray], delta: float) -> tuple[float, float]:
    prep = prepare(law, rows.E.to_numpy(), {k: feats[k] for k in law.inputs})
    rng = np.random.default_rng(0)
    lo, hi = float(prep.log_y.min()), float(prep.log_y.max())
    starts = np.array(
        [
            [
                rng.uniform(lo - 2, hi + 0.5) if n.startswith("c") else rng.uniform(-1.5, 1.5)
                for n in law.theta
            ]
            for _ in range(30)
        ]
    )
    full = fit_prepared(prep, delta=delta, starts=starts)
    mask = rows.arch.isin(HOLDOUT_ARCHS).to_numpy()
    loo = leave_one_run_out(prep, delta=delta, full=full)["mae_pct"]
    return loo, holdout(prep, mask, delta=delta, full=full)["mae_pct"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "paper"))
    ap.add_argument("--targets", default="imagenet1k,mscoco_captions")
    ap.add_argument("--delta", type=float, default=1e-3)
    ap.add_argument("--forms", nargs="*", help="names (or unique prefixes) of forms to run; default all")
    args = ap.parse_args()
    results, _ = load_paper(args.data)
    targets = args.targets.split(",")
    data = {}
    for t in targets:
        rows = target_rows(results, t)
        rows = rows[rows.source == "openclip"].reset_index(drop=True)
        data[t] = (rows, features(rows, args.data))
    chosen = [k for k in FORMS if not args.forms or any(k.startswith(p) for p in args.forms)]
    print(f"{'form':<44} {'params':>6}  " + "  ".join(f"{t[:10]:>10} LOO / hold" for t in targets))
    for name in chosen:
        law = make_law(name, FORMS[name])
        cells = [check(law, *data[t], args.delta) for t in targets]
        print(
            f"{name:<44} {law.n_params:>6}  " + "  ".join(f"{a:>10.3f} / {b:.3f}" for a, b in cells),
            flush=True,
        )


if __name__ == "__main__":
    main()
