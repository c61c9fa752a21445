"""The registry of scaling laws: their formulas, inputs, parameters and log-space predictors.

Every non-linear law is written as a log-sum-exp of linear-in-parameter terms,
    log E = LSE_m T_m(theta),
so the optimiser works on unbounded log-coefficients (a = log A) and plain exponents: this keeps the
problem well conditioned over many orders of magnitude of N, D and C. Inputs are centred in log
space (log x - c_x) before fitting and the coefficients are mapped back afterwards, so a grid of
starts means the same thing whatever units a table uses. The terms and their analytic Jacobians are
written by hand because scipy's curve-fitting helpers offer neither Huber loss on log residuals nor
a log-sum-exp parametrisation (Hoffmann et al. 2022, Besiroglu et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.laws.joint import (
    joint_extra_grid,
    joint_from,
    joint_grid,
    joint_jac,
    joint_terms,
    joint_to,
)
from clipscale.fit.laws.nonlinear import (
    datacon_from,
    datacon_grid,
    datacon_published_fit,
    datacon_terms,
    datacon_to,
    offset_from,
    offset_grid,
    offset_jac,
    offset_terms,
    offset_to,
)

Inputs = dict[str, np.ndarray]
# terms(theta (..., p), logx: centred log inputs (n,), raw: raw inputs (n,), centre) -> T (..., n, m)
TermsFn = Callable[[np.ndarray, Inputs, Inputs, dict[str, float]], np.ndarray]
# jac(theta (p,), logx, raw, centre) -> dT/dtheta (n, m, p)
JacFn = Callable[[np.ndarray, Inputs, Inputs, dict[str, float]], np.ndarray]


@dataclass(frozen=True)
class Law:
    """One scaling law. `kind` is 'loglinear' (closed-form line in log10-log10), 'frontier' or 'lse'."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    formula: str
    description: str
    theta: tuple[str, ...] = ()  # internal parameter names (lse laws)
    bounds: tuple[tuple[float, float], ...] = ()
    terms: TermsFn | None = field(default=None, repr=False)
    jac: JacFn | None = field(default=None, repr=False)
    grid: Callable[[np.ndarray], list[np.ndarray]] | None = field(default=None, repr=False)
    to_params: Callable[[np.ndarray, dict[str, float]], dict[str, float]] | None = field(
        default=None, repr=False
    )
    from_params: Callable[[dict[str, float], dict[str, float]], np.ndarray] | None = field(
        default=None, repr=False
    )
    linear_terms: bool = False  # every term is linear in theta: the Jacobian is a constant design
    # The estimator the law was published with, where it applies (prep, delta) -> internal theta or None:
    # a grid search from scratch then starts there instead of the law's grid (see fit.estimation.estimate).
    protocol: Callable[[Any, float], np.ndarray | None] | None = field(default=None, repr=False)
    # Further grids of starts (regions), for good optima whose grid points score worse than the main
    # grid's best and so would never be among its starts (clipscale.fit.estimation.estimate.grid_starts).
    extra_grid: Callable[[np.ndarray], list[list[np.ndarray]]] | None = field(default=None, repr=False)

    @property
    def n_params(self) -> int:
        return len(self.params)

    def predict(self, params: dict[str, float], inputs: Inputs) -> np.ndarray:
        """Error E predicted at `inputs` (raw, un-centred) from public parameters."""
        return np.exp(self.log_predict(params, inputs))

    def log_predict(self, params: dict[str, float], inputs: Inputs) -> np.ndarray:
        """Natural log of the predicted error at raw `inputs`."""
        x = {k: np.atleast_1d(np.asarray(inputs[k], dtype=float)) for k in self.inputs}
        if self.kind in ("loglinear", "frontier"):
            return np.log(params["A"]) + params["alpha"] * np.log(x["C"])
        zero = {k: 0.0 for k in self.inputs}
        theta = self.from_params(params, zero)
        logx = {k: np.log(v) for k, v in x.items()}
        return logsumexp(self.terms(theta, logx, x, zero))


def logsumexp(t: np.ndarray) -> np.ndarray:
    """log(sum(exp(t), axis=-1)), stable."""
    m = t.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(t - m).sum(axis=-1, keepdims=True)))[..., 0]


def lse_and_jacobian(
    law: Law, theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """log E (n,) and d log E / d theta (n, p) for an lse law: softmax-weighted term Jacobians."""
    t = law.terms(theta, logx, raw, centre)
    m = t.max(axis=-1, keepdims=True)
    w = np.exp(t - m)
    s = w.sum(axis=-1, keepdims=True)
    soft = w / s
    dt = (
        law.jac(theta, logx, raw, centre)
        if law.jac is not None
        else numeric_jac(law, theta, logx, raw, centre)
    )
    return (m + np.log(s))[:, 0], np.einsum("nm,nmp->np", soft, dt)


def numeric_jac(
    law: Law, theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]
) -> np.ndarray:
    """dT/dtheta (n, m, p) by central differences, for laws whose terms are not worth differentiating by
    hand (all parameters perturbed in one batched call of `terms`)."""
    p = theta.shape[0]
    h = 1e-6 * np.maximum(1.0, np.abs(theta))
    steps = np.diag(h)
    t = law.terms(np.concatenate([theta + steps, theta - steps]), logx, raw, centre)  # (2p, n, m)
    return np.moveaxis((t[:p] - t[p:]) / (2 * h[:, None, None]), 0, -1)


def _th(theta: np.ndarray, i: int) -> np.ndarray:
    """Parameter i of a (p,) or (g, p) theta, shaped to broadcast against (n,) inputs."""
    return np.asarray(theta)[..., i, None]


# ---------------------------------------------------------------------------------------- saturating
def _sat_terms(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    c = logx["C"]
    return np.stack(np.broadcast_arrays(_th(theta, 0) + _th(theta, 1) * c, _th(theta, 2) + 0.0 * c), axis=-1)


def _sat_jac(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    c = logx["C"]
    dt = np.zeros((c.shape[0], 2, 3))
    dt[:, 0, 0], dt[:, 0, 1], dt[:, 1, 2] = 1.0, c, 1.0
    return dt


def _sat_grid(logy: np.ndarray) -> list[np.ndarray]:
    lo, hi = float(logy.min()), float(logy.max())
    return [
        np.linspace(lo - 1.0, hi + 1.0, 6),
        np.array([-1.0, -0.5, -0.25, -0.1, -0.03]),
        np.linspace(lo - 4.0, lo, 5),
    ]


def _sat_to(theta: np.ndarray, centre: dict[str, float]) -> dict[str, float]:
    a, alpha, e = (float(v) for v in theta)
    return {"A": float(np.exp(a - alpha * centre["C"])), "alpha": alpha, "E_inf": float(np.exp(e))}


def _sat_from(p: dict[str, float], centre: dict[str, float]) -> np.ndarray:
    return np.array([np.log(p["A"]) + p["alpha"] * centre["C"], p["alpha"], np.log(p["E_inf"])])


# ---------------------------------------------------------------------------------------- chinchilla
def _chin_terms(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    ln, ld = logx["N"], logx["D"]
    return np.stack(
        np.broadcast_arrays(
            _th(theta, 0) - _th(theta, 1) * ln, _th(theta, 2) - _th(theta, 3) * ld, _th(theta, 4) + 0.0 * ln
        ),
        axis=-1,
    )


def _chin_jac(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    ln, ld = logx["N"], logx["D"]
    dt = np.zeros((ln.shape[0], 3, 5))
    dt[:, 0, 0], dt[:, 0, 1] = 1.0, -ln
    dt[:, 1, 2], dt[:, 1, 3] = 1.0, -ld
    dt[:, 2, 4] = 1.0
    return dt


def _chin_grid(logy: np.ndarray) -> list[np.ndarray]:
    lo, hi = float(logy.min()), float(logy.max())
    coef = np.linspace(lo - 2.0, hi + 1.0, 6)
    expo = np.array([0.1, 0.25, 0.5, 1.0, 1.5])
    return [coef, expo, coef, expo, np.linspace(lo - 3.0, lo, 5)]


def _chin_to(theta: np.ndarray, centre: dict[str, float]) -> dict[str, float]:
    a, alpha, b, beta, e = (float(v) for v in theta[:5])
    return {
        "A": float(np.exp(a + alpha * centre["N"])),
        "alpha": alpha,
        "B": float(np.exp(b + beta * centre["D"])),
        "beta": beta,
        "E_inf": float(np.exp(e)),
    }


def _chin_from(p: dict[str, float], centre: dict[str, float]) -> np.ndarray:
    return np.array(
        [
            np.log(p["A"]) - p["alpha"] * centre["N"],
            p["alpha"],
            np.log(p["B"]) - p["beta"] * centre["D"],
            p["beta"],
            np.log(p["E_inf"]),
        ]
    )


_BIG = 60.0
LAWS: dict[str, Law] = {
    "power": Law(
        "power",
        "loglinear",
        ("C",),
        ("A", "alpha"),
        "E = A·C^alpha",
        "least-squares line through all points in log10-log10 space",
    ),
    "frontier": Law(
        "frontier",
        "frontier",
        ("C",),
        ("A", "alpha"),
        "E = A·C^alpha",
        "the paper's method: line through the best point of 5 equal log10 C bins",
    ),
    "saturating": Law(
        "saturating",
        "lse",
        ("C",),
        ("A", "alpha", "E_inf"),
        "E = E_inf + A·C^alpha",
        "power law with an irreducible error",
        ("a", "alpha", "e"),
        ((-_BIG, _BIG), (-5.0, 0.0), (-_BIG, _BIG)),
        _sat_terms,
        _sat_jac,
        _sat_grid,
        _sat_to,
        _sat_from,
        linear_terms=True,
    ),
    "offset": Law(
        "offset",
        "lse",
        ("C",),
        ("A", "C0", "alpha", "E_inf"),
        "E = A·(C + C0)^alpha + E_inf",
        "Nezhurina et al. 2025: a power law in offset compute with an irreducible error",
        ("a", "c0", "alpha", "e"),
        ((-_BIG, _BIG), (-25.0, 15.0), (-5.0, 0.0), (-_BIG, _BIG)),
        offset_terms,
        offset_jac,
        offset_grid,
        offset_to,
        offset_from,
    ),
    "chinchilla": Law(
        "chinchilla",
        "lse",
        ("N", "D"),
        ("A", "alpha", "B", "beta", "E_inf"),
        "E = E_inf + A/N^alpha + B/D^beta",
        "Hoffmann et al. 2022, approach 3",
        ("a", "alpha", "b", "beta", "e"),
        ((-_BIG, _BIG), (0.0, 5.0), (-_BIG, _BIG), (0.0, 5.0), (-_BIG, _BIG)),
        _chin_terms,
        _chin_jac,
        _chin_grid,
        _chin_to,
        _chin_from,
        linear_terms=True,
    ),
    "joint": Law(
        "joint",
        "lse",
        ("N", "U", "S"),
        ("A", "alpha", "beta", "G", "kappa", "rho", "gamma"),
        "E = A/(N^alpha·S^beta) + G·N^kappa·R^rho/U'^gamma, U' = min(U,S), R = S/U'",
        "a power law in model size and samples seen, plus a data term set by the unique samples",
        ("a", "alpha", "beta", "g", "kappa", "rho", "gamma"),
        ((-_BIG, _BIG), (0.0, 5.0), (0.0, 5.0), (-_BIG, _BIG), (-3.0, 3.0), (-3.0, 3.0), (0.0, 5.0)),
        joint_terms,
        joint_jac,
        joint_grid,
        joint_to,
        joint_from,
        linear_terms=True,
        extra_grid=joint_extra_grid,
    ),
    "data-constrained": Law(
        "data-constrained",
        "lse",
        ("N", "D", "U"),
        ("E_inf", "A", "alpha", "B", "beta", "R_D_star", "R_N_star"),
        "E = E_inf + A/N'^alpha + B/D'^beta, D' = U' + U'·R_D*·(1 − e^(−R_D/R_D*)), "
        "N' = U_N + U_N·R_N*·(1 − e^(−R_N/R_N*))",
        "Muennighoff et al. 2023: Chinchilla's law, repeated tokens and excess parameters decaying in value",
        ("e", "a", "alpha", "b", "beta", "log_rd", "log_rn"),
        ((-_BIG, _BIG), (-_BIG, _BIG), (1e-4, 5.0), (-_BIG, _BIG), (1e-4, 5.0), (-7.0, 12.0), (-7.0, 12.0)),
        datacon_terms,
        None,
        datacon_grid,
        datacon_to,
        datacon_from,
        protocol=datacon_published_fit,
    ),
}


def list_laws() -> list[str]:
    return list(LAWS)


def get_law(name: str) -> Law:
    try:
        return LAWS[name]
    except KeyError:
        raise ClipscaleError(f"unknown law {name!r}; valid laws: {', '.join(LAWS)}") from None


def derived_quantities(law: Law, params: dict[str, float]) -> dict[str, float]:
    """Quantities computed from the parameters that get CIs too: compute-optimal scaling exponents
    (N_opt ∝ C^N_opt_exponent, D_opt ∝ C^D_opt_exponent at C = N·D). Empty where the law has no
    compute-optimal size (the error falls, or rises, with N at every fixed compute)."""
    if law.name in ("chinchilla", "data-constrained"):  # data-constrained: with unlimited unique data
        s = params["alpha"] + params["beta"]
        if s > 0:
            return {"N_opt_exponent": params["beta"] / s, "D_opt_exponent": params["alpha"] / s}
    if law.name == "joint":
        # Unlimited unique data (U' = S, R = 1): E = A·C^-beta·N^(beta-alpha) + G·C^-gamma·N^(kappa+gamma).
        # An interior optimum needs the first term falling and the second rising in N.
        a, b, k, g = params["alpha"], params["beta"], params["kappa"], params["gamma"]
        if a > b and k + g > 0:
            s = k + g + a - b
            return {"N_opt_exponent": (g - b) / s, "D_opt_exponent": (k + a) / s}
    return {}
