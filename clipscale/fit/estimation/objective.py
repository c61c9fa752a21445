"""What a fit minimises (`--objective`): a loss of residuals, summed over points with their weights.

- `huber-log` (default): Huber (delta = `--huber-delta`) of r = log y - log E(theta); robust to a few
  outlying runs (Hoffmann et al. 2022 approach 3).
- `squares-log`: least squares of the same log residuals.
- `squares`: least squares of r = y - E(theta), the target itself: what `scipy.optimize.curve_fit`
  minimises (Nezhurina et al. 2025 fit E = A·(C + C0)^alpha + E_inf this way).

Inside the optimiser the sum is divided by a scale (delta for the log objectives; delta · mean(y)² for
`squares`, whose residuals are ~ y times the log ones) so that L-BFGS-B's tolerances mean the same for
every objective; reported objectives are the plain sums. Written here (not with scipy's
`least_squares` loss options) because the grid screen and the analytic gradient share it.
"""

from __future__ import annotations

import numpy as np

from clipscale.errors import ClipscaleError

OBJECTIVES = ("huber-log", "squares-log", "squares")
DEFAULT_OBJECTIVE = "huber-log"


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise ClipscaleError(f"--objective {name!r}: expected one of {', '.join(OBJECTIVES)}")
    return name


def residuals(
    objective: str, y: np.ndarray, log_y: np.ndarray, logp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals r of predictions exp(logp) (any leading batch axes) and dr / dlogp."""
    if objective == "squares":
        p = np.exp(logp)
        return y - p, -p
    r = log_y - logp
    return r, -np.ones_like(r)


def rho(objective: str, r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-point loss of residuals r and its derivative psi = d loss / dr."""
    if objective == "huber-log":
        a = np.abs(r)
        return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)), np.clip(r, -delta, delta)
    return 0.5 * r * r, r


def scale(objective: str, y: np.ndarray, delta: float) -> float:
    """The divisor of the summed loss inside the optimiser (see the module docstring)."""
    if objective == "squares":
        return float(delta * np.mean(y) ** 2)
    return float(delta)
