"""Fixed parameters (`--fix`) of a law: which public names and values it accepts.

With fixed parameters the inputs are not centred, so every internal parameter is a function of one
public parameter and fixing it is a bound lo = hi in L-BFGS-B (clipscale.fit.estimation.bounds). This
module needs only the law, so that the points (clipscale.fit.estimation.points) can check `--fix`
without an import circle.
"""

from __future__ import annotations

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.fit.laws.registry import Law


def check_fix(law: Law, fix: dict[str, float] | None) -> tuple[dict[str, float], dict[int, float]]:
    """Validate fixed parameters (public names of `law`); for non-linear laws also their internal values
    (uncentred, so each internal parameter depends on its public one only) checked against the bounds."""
    fix = dict(fix or {})
    for k, v in fix.items():
        if k not in law.params:
            raise ClipscaleError(
                f"--fix {k}: law {law.name!r} has no parameter {k}; its parameters are "
                f"{', '.join(law.params)}"
            )
        if not np.isfinite(v):
            raise ClipscaleError(f"--fix {k}={v}: expected a finite number")
    if law.kind != "lse" or not fix:
        return fix, {}
    zero = dict.fromkeys(law.inputs, 0.0)
    try:
        with np.errstate(all="ignore"):
            theta = law.from_params({**dict.fromkeys(law.params, 1.0), **fix}, zero)
    except (ValueError, ZeroDivisionError):
        theta = np.full(len(law.params), np.nan)
    fixed = {}
    for k in fix:
        i = law.params.index(k)
        lo, hi = law.bounds[i]
        if not (np.isfinite(theta[i]) and lo <= theta[i] <= hi):
            raise ClipscaleError(f"--fix {k}={fix[k]}: outside the range law {law.name!r} allows for {k}")
        fixed[i] = float(theta[i])
    return fix, fixed
