"""Term functions of the `joint` law: E = A/(N^alpha·S^beta) + G·N^kappa·R^rho/U'^gamma, U' = min(U, S),
R = S/U'. Same conventions as `clipscale.fit.laws`: terms(theta (..., p), centred log inputs, raw inputs,
centre) -> log-terms (..., n, m); both terms are linear in theta, so the Jacobian is a constant design.
"""

from __future__ import annotations

import numpy as np

from clipscale.fit.laws.nonlinear import Inputs, _th


def unique_seen(u: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Distinct samples a run actually saw: all of U once S >= U, else only S of them."""
    return np.minimum(u, s)


def joint_logs(raw: Inputs, centre: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Centred log of the unique samples seen U' = min(U, S), and log of the epochs R = S / U' (>= 0)."""
    lu = np.log(unique_seen(raw["U"], raw["S"]))
    return lu - centre["U"], np.log(raw["S"]) - lu


def joint_terms(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    ln, ls = logx["N"], logx["S"]
    lu, lr = joint_logs(raw, centre)
    return np.stack(
        np.broadcast_arrays(
            _th(theta, 0) - _th(theta, 1) * ln - _th(theta, 2) * ls,
            _th(theta, 3) + _th(theta, 4) * ln + _th(theta, 5) * lr - _th(theta, 6) * lu,
        ),
        axis=-1,
    )


def joint_jac(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    ln, ls = logx["N"], logx["S"]
    lu, lr = joint_logs(raw, centre)
    dt = np.zeros((ln.shape[0], 2, 7))
    dt[:, 0, 0], dt[:, 0, 1], dt[:, 0, 2] = 1.0, -ln, -ls
    dt[:, 1, 3], dt[:, 1, 4], dt[:, 1, 5], dt[:, 1, 6] = 1.0, ln, lr, -lu
    return dt


def joint_grid(logy: np.ndarray) -> list[np.ndarray]:
    lo, hi = float(logy.min()), float(logy.max())
    coef = np.linspace(lo - 3.0, hi + 1.0, 6)
    expo = np.array([0.03, 0.1, 0.3, 1.0])
    signed = np.array([-0.2, 0.0, 0.2])
    return [coef, expo, expo, coef, signed, signed, np.array([0.3, 1.0, 2.0])]


def joint_extra_grid(logy: np.ndarray) -> list[list[np.ndarray]]:
    """Optima where one term carries the error and the other is a small, steep correction (e.g. vtab on
    the 27 runs up to L/14: A tiny at the centre, beta 1.6, gamma 0.02), which the main grid never reaches."""
    lo, hi = float(logy.min()), float(logy.max())
    coef, tiny = np.linspace(lo - 3.0, hi + 1.0, 6), np.array([lo - 7.0, lo - 5.0])
    expo, steep = np.array([0.03, 0.1, 0.3, 1.0]), np.array([0.3, 1.0, 2.0])
    flat, signed = np.array([0.01, 0.03, 0.1]), np.array([-0.2, 0.0, 0.2])
    return [[tiny, steep, steep, coef, signed, signed, flat], [coef, expo, expo, tiny, signed, signed, steep]]


def joint_to(theta: np.ndarray, centre: dict[str, float]) -> dict[str, float]:
    a, alpha, beta, g, kappa, rho, gamma = (float(v) for v in theta[:7])
    return {
        "A": float(np.exp(a + alpha * centre["N"] + beta * centre["S"])),
        "alpha": alpha,
        "beta": beta,
        "G": float(np.exp(g - kappa * centre["N"] + gamma * centre["U"])),
        "kappa": kappa,
        "rho": rho,
        "gamma": gamma,
    }


def joint_from(p: dict[str, float], centre: dict[str, float]) -> np.ndarray:
    return np.array(
        [
            np.log(p["A"]) - p["alpha"] * centre["N"] - p["beta"] * centre["S"],
            p["alpha"],
            p["beta"],
            np.log(p["G"]) + p["kappa"] * centre["N"] - p["gamma"] * centre["U"],
            p["kappa"],
            p["rho"],
            p["gamma"],
        ]
    )
