"""`at_bound` in every form (at or beyond a bound, a CI end at a bound, a value --fix refuses), and scoring a
fully fixed parameter set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.fit import fit_law
from clipscale.fit.estimation.bounds import params_at_bound
from clipscale.fit.estimation.points import prepare
from clipscale.fit.laws import get_law

C = np.geomspace(1e3, 1e7, 10)


def test_ci_end_at_a_bound_is_flagged_though_the_estimate_is_not() -> None:
    # E_inf = 0.003 under 3% noise: the estimate is interior, but some refits send E_inf to 0
    y = (0.003 + 2 * C**-0.3) * np.exp(np.random.default_rng(4).normal(0, 0.03, C.size))
    fit = fit_law("saturating", y=y, C=C, bootstrap=100, seed=4)
    assert fit.params["E_inf"] == pytest.approx(0.003, rel=0.2)
    assert fit.at_bound == ["E_inf"]
    assert fit.at_bound_reasons["E_inf"].startswith("the CI's lower end is at the lower bound (")
    # without noise, no refit ends at a bound
    clean = fit_law("saturating", y=0.003 + 2 * C**-0.3, C=C, bootstrap=30)
    assert clean.at_bound == [] and clean.at_bound_reasons == {}


def test_estimates_beyond_a_bound_either_side_and_values_fix_refuses() -> None:
    """A published estimator's point is not bounded: Muennighoff et al.'s fit can end at R_N* = 6.96e-6,
    below the smallest R_N* that --fix accepts (e^-7)."""
    law = get_law("data-constrained")
    x = {"N": np.array([1e8, 1e9, 2e9]), "D": np.array([1e10, 3e10, 9e10]), "U": np.array([1e9, 1e10, 1e10])}
    five = {"E_inf": 1.9, "A": 500.0, "alpha": 0.35, "B": 1500.0, "beta": 0.35}
    prep = prepare(law, np.array([2.5, 2.4, 2.3]), x, loss=True, fix=five)
    theta = law.from_params({**five, "R_D_star": 15.0, "R_N_star": 6.96e-6}, prep.centre)
    flagged = params_at_bound(prep, theta)
    assert list(flagged) == ["R_N_star"]
    assert flagged["R_N_star"].startswith("beyond the lower bound")
    assert "R_N_star = 6.96e-06 is outside the range --fix accepts" in flagged["R_N_star"]
    sat = get_law("saturating")
    prep = prepare(sat, 0.1 + 2 * C**-0.3, {"C": C}, fix={"E_inf": 0.1})
    theta = sat.from_params({"A": 2.0, "alpha": 0.1, "E_inf": 0.1}, prep.centre)  # alpha > 0: past 0
    assert params_at_bound(prep, theta) == {
        "alpha": "beyond the upper bound; alpha = 0.1 is outside the range --fix accepts"
    }


def test_fully_fixed_parameters_are_scored_not_fitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    y = (0.05 + 2 * C**-0.3) * np.exp(np.random.default_rng(0).normal(0, 0.01, C.size))
    free = fit_law("saturating", y=y, C=C)
    scored = fit_law("saturating", y=y, C=C, fix=free.params, bootstrap=20)
    assert scored.objective == pytest.approx(free.objective, rel=1e-9)
    assert scored.r2 == pytest.approx(free.r2, rel=1e-9)
    assert scored.r2_log == pytest.approx(free.r2_log, rel=1e-9)
    assert np.allclose(scored.residuals, np.log(y) - np.log(free.predict(C=C)), atol=1e-12)
    assert scored.ci_unavailable and "every parameter is fixed" in scored.ci_unavailable
    # a line: the objective is fit_line's (squared log10 residuals)
    line = fit_law("power", y=y, C=C, fix={"A": 2.0, "alpha": -0.3})
    res = np.log10(y) - np.log10(2.0 * C**-0.3)
    assert line.objective == pytest.approx(float(np.sum(res**2)), rel=1e-9)
    assert np.allclose(line.residuals, res)
    pd.DataFrame({"C": C, "err": y}).to_csv(tmp_path / "t.csv", index=False)
    argv = ["fit", str(tmp_path / "t.csv"), "--law", "power", "--C", "C", "--y", "err",
            "--fix", "A=2", "alpha=-0.3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "residuals (huber-log scale) of the 10 points" in out and "scored, not fitted" in out
    assert main([*argv, "--json"]) == 0
    f = json.loads(capsys.readouterr().out)["fits"][0]
    assert f["objective"] == pytest.approx(line.objective) and len(f["residuals"]) == 10
