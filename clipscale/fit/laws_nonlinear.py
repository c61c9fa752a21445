"""Term functions of the laws whose terms are not linear in their parameters: `offset` (Nezhurina et
al. 2025) and `data-constrained` (Muennighoff et al. 2023). Same conventions as `clipscale.fit.laws`:
terms(theta (..., p), centred log inputs, raw inputs, centre) -> log-terms (..., n, m).
"""

from __future__ import annotations

import numpy as np

Inputs = dict[str, np.ndarray]


def _th(theta: np.ndarray, i: int) -> np.ndarray:
    """Parameter i of a (p,) or (g, p) theta, shaped to broadcast against (n,) inputs."""
    return np.asarray(theta)[..., i, None]


# ---------------------------------------------------------------------------------------- offset
def offset_base(theta: np.ndarray, logx: Inputs) -> np.ndarray:
    """log(C' + C0') with C' = C / e^centre and C0' = e^c0: the log of the offset compute."""
    return np.logaddexp(logx["C"], _th(theta, 1))


def offset_terms(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    t1 = _th(theta, 0) + _th(theta, 2) * offset_base(theta, logx)
    return np.stack(np.broadcast_arrays(t1, _th(theta, 3) + 0.0 * logx["C"]), axis=-1)


def offset_jac(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    c = logx["C"]
    dt = np.zeros((c.shape[0], 2, 4))
    dt[:, 0, 0] = 1.0
    dt[:, 0, 1] = theta[2] / (1.0 + np.exp(c - theta[1]))  # alpha · C0' / (C' + C0')
    dt[:, 0, 2] = offset_base(theta, logx)
    dt[:, 1, 3] = 1.0
    return dt


def offset_grid(logy: np.ndarray) -> list[np.ndarray]:
    lo, hi = float(logy.min()), float(logy.max())
    return [
        np.linspace(lo - 1.0, hi + 1.0, 6),
        np.array([-8.0, -4.0, -2.0, 0.0, 1.0]),
        np.array([-1.0, -0.5, -0.25, -0.1, -0.03]),
        np.linspace(lo - 4.0, lo, 5),
    ]


def offset_to(theta: np.ndarray, centre: dict[str, float]) -> dict[str, float]:
    a, c0, alpha, e = (float(v) for v in theta)
    return {
        "A": float(np.exp(a - alpha * centre["C"])),
        "C0": float(np.exp(c0 + centre["C"])),
        "alpha": alpha,
        "E_inf": float(np.exp(e)),
    }


def offset_from(p: dict[str, float], centre: dict[str, float]) -> np.ndarray:
    return np.array(
        [
            np.log(p["A"]) + p["alpha"] * centre["C"],
            np.log(p["C0"]) - centre["C"],
            p["alpha"],
            np.log(p["E_inf"]),
        ]
    )


# ---------------------------------------------------------------------------------------- data-constrained
def datacon_terms(theta: np.ndarray, logx: Inputs, raw: Inputs, centre: dict[str, float]) -> np.ndarray:
    """Muennighoff et al. 2023: log of E, A/N'^alpha, B/D'^beta, with the effective parameters N' and data
    D' of repeated tokens. Internal: e, a = log A − alpha·c_N, alpha, b = log B − beta·c_U, beta,
    log R_D*, log R_N* (c: centres)."""
    e, a, alpha, b, beta, lrd, lrn = (_th(theta, i) for i in range(7))
    la, lb = a + alpha * centre["N"], b + beta * centre["U"]  # absolute log A, log B
    log_n = np.log(raw["N"])
    log_u = np.log(np.minimum(raw["U"], raw["D"]))  # unique tokens seen
    with np.errstate(all="ignore"):
        log_g = (np.log(alpha) + la - np.log(beta) - lb) / (alpha + beta)
        log_un = np.minimum(log_n, (beta / alpha) * (log_u + log_g) + log_g)  # U_N = min(N, N_opt(U))
        rd_star, rn_star = np.exp(lrd), np.exp(lrn)
        r_n = np.maximum(np.exp(log_n - log_un) - 1.0, 0.0)
        r_d = np.maximum(np.exp(np.log(raw["D"]) - log_u) - 1.0, 0.0)
        log_n_eff = log_un + np.log1p(rn_star * -np.expm1(-r_n / rn_star))
        log_d_eff = log_u + np.log1p(rd_star * -np.expm1(-r_d / rd_star))
    t_a = la - alpha * log_n_eff
    t_b = lb - beta * log_d_eff
    return np.stack(np.broadcast_arrays(e + 0.0 * log_n, t_a, t_b), axis=-1)


def datacon_grid(logy: np.ndarray) -> list[np.ndarray]:
    lo, hi = float(logy.min()), float(logy.max())
    coef = np.linspace(lo - 2.0, hi + 1.0, 4)
    expo = np.array([0.2, 0.35, 0.6])
    star = np.log(np.array([1.0, 5.0, 15.0, 50.0]))
    return [np.linspace(lo - 1.0, lo, 4), coef, expo, coef, expo, star, star]


def datacon_to(theta: np.ndarray, centre: dict[str, float]) -> dict[str, float]:
    e, a, alpha, b, beta, lrd, lrn = (float(v) for v in theta)
    return {
        "E_inf": float(np.exp(e)),
        "A": float(np.exp(a + alpha * centre["N"])),
        "alpha": alpha,
        "B": float(np.exp(b + beta * centre["U"])),
        "beta": beta,
        "R_D_star": float(np.exp(lrd)),
        "R_N_star": float(np.exp(lrn)),
    }


def datacon_from(p: dict[str, float], centre: dict[str, float]) -> np.ndarray:
    return np.array(
        [
            np.log(p["E_inf"]),
            np.log(p["A"]) - p["alpha"] * centre["N"],
            p["alpha"],
            np.log(p["B"]) - p["beta"] * centre["U"],
            p["beta"],
            np.log(p["R_D_star"]),
            np.log(p["R_N_star"]),
        ]
    )
