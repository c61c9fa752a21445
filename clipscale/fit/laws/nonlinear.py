"""Term functions of the laws whose terms are not linear in their parameters: `offset` (Nezhurina et
al. 2025) and `data-constrained` (Muennighoff et al. 2023). Same conventions as `clipscale.fit.laws`:
terms(theta (..., p), centred log inputs, raw inputs, centre) -> log-terms (..., n, m).
"""

from __future__ import annotations

from typing import Any

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


# The published estimator of Muennighoff et al. 2023 (datablations, utils/parametric_fit.ipynb): the five
# Chinchilla coefficients come from other runs and are held fixed; R_D*, R_N* are fitted in natural units
# by torch's L-BFGS (lr 0.1, history 10, 20 iterations a step, strong Wolfe, 50 steps, float32) from
# each start of R_D*, R_N* in linspace(0, 20, 4) (starts at 0 give NaN and drop out, as in the original).
DATACON_REPETITION = ("R_D_star", "R_N_star")
DATACON_PUBLISHED_STARTS = np.linspace(0.0, 20.0, 4)


def datacon_published_fit(prep: Any, delta: float) -> np.ndarray | None:
    """Internal theta of the published protocol's best start, or None where it does not apply (a free
    parameter other than R_D*, R_N*). A fixed R_D* or R_N* stays at its value."""
    free = [k for k in prep.law.params if k not in prep.fix]
    if not free or any(k not in DATACON_REPETITION for k in free):
        return None
    import torch  # lazily: only this protocol needs it

    p = prep.fix
    u = np.minimum(prep.raw["U"], prep.raw["D"])
    g = ((p["alpha"] * p["A"]) / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
    u_n = np.minimum(prep.raw["N"], g * (u * g) ** (p["beta"] / p["alpha"]))  # N_opt of U tokens
    cols = [u_n, u, np.maximum(prep.raw["D"] / u - 1.0, 0.0), np.maximum(prep.raw["N"] / u_n - 1.0, 0.0)]
    inp = torch.tensor(np.stack([*cols, prep.y], axis=1), dtype=torch.float32)
    chin = [np.log(p["A"]), np.log(p["B"]), np.log(p["E_inf"]), p["alpha"], p["beta"]]
    coef = torch.tensor(chin, dtype=torch.float32)
    grid = [DATACON_PUBLISHED_STARTS if k not in p else np.array([p[k]]) for k in DATACON_REPETITION]
    best, best_loss = None, np.inf
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 182-element tensors: threads only add overhead
    try:
        for rd in grid[0]:
            for rn in grid[1]:
                held = [k in p for k in DATACON_REPETITION]
                loss, r = _torch_lbfgs(inp, coef, [float(rd), float(rn)], held, delta)
                if loss < best_loss:  # NaN never is
                    best, best_loss = r, loss
    finally:
        torch.set_num_threads(threads)
    if best is None:
        return None
    return datacon_from({**p, "R_D_star": best[0], "R_N_star": best[1]}, prep.centre)


def _torch_lbfgs(
    inp: Any, coef: Any, start: list[float], held: list[bool], delta: float
) -> tuple[float, list[float]]:
    """One start of the published fit: the original's optimiser settings and float32 arithmetic."""
    import torch

    star = torch.nn.Parameter(torch.tensor(start, dtype=torch.float32))
    opt = torch.optim.LBFGS([star], lr=1e-1, history_size=10, max_iter=20, line_search_fn="strong_wolfe")
    mask = torch.tensor([0.0 if h else 1.0 for h in held])

    def objective() -> Any:
        a, b, e, alpha, beta = coef
        n_eff = inp[:, 0] + inp[:, 0] * star[1] * (1 - torch.exp(-inp[:, 3] / star[1]))
        d_eff = inp[:, 1] + inp[:, 1] * star[0] * (1 - torch.exp(-inp[:, 2] / star[0]))
        pre = torch.stack([a - alpha * torch.log(n_eff), b - beta * torch.log(d_eff), e.expand(inp.shape[0])])
        log_pred = torch.logsumexp(pre, dim=0)
        h = torch.nn.functional.huber_loss(log_pred, torch.log(inp[:, 4]), delta=delta, reduction="none")
        return h.sum()

    def closure() -> Any:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        star.grad.mul_(mask)
        return loss

    with torch.no_grad():
        if not torch.isfinite(objective()):  # e.g. a start at 0: NaN from the first step, never the best
            return float("nan"), start
    for _ in range(50):
        loss = opt.step(closure)
    return float(loss.detach()), [float(v) for v in star.detach()]
