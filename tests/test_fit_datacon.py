"""The data-constrained law (Muennighoff et al. 2023): recovery, --fix, the published fit on datablations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.fit import fit_law
from clipscale.fit.estimation.estimate import fit_lse, huber_objective
from clipscale.fit.estimation.points import prepare
from clipscale.fit.laws import get_law
from clipscale.fit.laws.nonlinear import datacon_published_fit

DATA = Path(__file__).resolve().parents[2] / "shared" / "external" / "datablations"
# Published (README of ../shared/external/datablations): the five Chinchilla-style coefficients.
PUBLISHED = {
    "alpha": 0.3526596,
    "beta": 0.3526596,
    "A": float(np.exp(6.255414)),
    "B": float(np.exp(7.3049974)),
    "E_inf": float(np.exp(0.6254804)),
}
# the published estimator's machine spread (1.5x half its range: test_published_fit_reproduced_on_fit_set_182)
DATACON_TOL = {"R_D_star": 0.035, "R_N_star": 0.01}
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/external/datablations not present")


def synthetic() -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Runs with 1-60 epochs and models beyond the compute-optimal size for their unique data."""
    true = {
        "E_inf": 1.87,
        "A": 520.0,
        "alpha": 0.35,
        "B": 1480.0,
        "beta": 0.37,
        "R_D_star": 15.0,
        "R_N_star": 5.0,
    }
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e7), np.log(9e9), 150))
    u = np.exp(rng.uniform(np.log(1e8), np.log(2e11), 150))
    d = u * np.exp(rng.uniform(0, np.log(60), 150))
    return true, {"N": n, "D": d, "U": u}


def test_recovers_all_seven_parameters() -> None:
    true, x = synthetic()
    y = get_law("data-constrained").predict(true, x)
    fit = fit_law("data-constrained", y=y, loss=True, **x)
    for k, v in true.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-4), k
    assert fit.at_bound == [] and fit.r2 == pytest.approx(1.0)
    assert fit.derived["N_opt_exponent"] == pytest.approx(0.37 / 0.72)


def test_fix_holds_parameters_and_rejects_bad_keys() -> None:
    true, x = synthetic()
    y = get_law("data-constrained").predict(true, x) * np.exp(np.random.default_rng(1).normal(0, 0.01, 150))
    fixed = {k: true[k] for k in ("E_inf", "A", "alpha", "B", "beta")}
    fit = fit_law("data-constrained", y=y, loss=True, fix=fixed, bootstrap=20, **x)
    for k, v in fixed.items():
        assert fit.params[k] == v and k not in fit.ci
    assert fit.fixed == fixed and set(fit.ci) >= {"R_D_star", "R_N_star"}
    assert fit.params["R_D_star"] == pytest.approx(15.0, rel=0.15)
    with pytest.raises(ClipscaleError, match="--fix gamma: law 'data-constrained' has no parameter gamma"):
        fit_law("data-constrained", y=y, loss=True, fix={"gamma": 1.0}, **x)
    with pytest.raises(ClipscaleError, match=r"--fix alpha=-1\.0: outside the range"):
        fit_law("data-constrained", y=y, loss=True, fix={"alpha": -1.0}, **x)


def _published_inputs() -> dict[str, np.ndarray]:
    df = pd.read_csv(DATA / "fit_set_182.csv")
    return {
        "y": df.val_loss.to_numpy(),
        "N": df.params_N.to_numpy(),
        "D": df.tokens_D.to_numpy(),
        "U": df.unique_tokens_U.to_numpy(),
    }


def _cli_fit(capsys: pytest.CaptureFixture[str], fix: dict[str, float]) -> dict:
    rc = main(
        [
            "fit",
            str(DATA / "fit_set_182.csv"),
            "--law",
            "data-constrained",
            "--N",
            "params_N",
            "--D",
            "tokens_D",
            "--U",
            "unique_tokens_U",
            "--y",
            "val_loss",
            "--loss",
            "--fix",
            *[f"{k}={v!r}" for k, v in fix.items()],
            "--json",
        ]
    )
    assert rc == 0
    return json.loads(capsys.readouterr().out)["fits"][0]


@needs_data
def test_published_fit_reproduced_on_fit_set_182(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: with the five published coefficients fixed, R_D* ≈ 15.4, R_N* ≈ 5.3, objective 0.01583
    and R² of loss 0.772 (the published estimator, `datacon_published_fit`); the lower minimum our own search
    finds elsewhere is reported in `notes`, not hidden. Tolerances (issue 19): the float32 estimator's
    point moves with the machine's float32 arithmetic. bench/bench_datacon_sensitivity.py measured, over
    inputs moved by one float32 ulp, shuffled rows, 1/2/4 threads and starts moved by ±10 %, R_D* in
    [15.349, 15.387] and R_N* in [5.311, 5.320] within the published basin, the objective the same to 7
    digits (15.387 here, 15.378 on another x86-64 machine); DATACON_TOL is ~1.5x that half-spread.
    4 of 15 perturbed runs (rows in another order among them: float32 sums in another order, as another
    CPU's vector width gives) ended in the neighbouring basin, R_D* 46.6-47.2, R_N* 2.325-2.339, objective
    0.0158074 (lower; docs/scaling-laws.md): the protocol's answer on such a machine, so it passes too,
    as itself, and nothing else does."""
    fit = _cli_fit(capsys, PUBLISHED)
    _assert_a_basin_of_the_published_protocol(fit["params"], fit["objective"], fit["r2"], fit["notes"])
    assert fit["fixed"] == PUBLISHED and fit["at_bound"] == []
    # The library gives the same fit.
    lib = fit_law("data-constrained", loss=True, fix=PUBLISHED, **_published_inputs())
    assert lib.params == fit["params"] and lib.objective == fit["objective"] and lib.notes == fit["notes"]


@needs_data
def test_rows_in_another_order_give_one_of_the_two_basins() -> None:
    """The rows in another order are still the protocol's answer: of 8 random orders, 4 ended in the
    neighbouring basin here (this one among them: R_D* 46.86, R_N* 2.333), 4 in the published one."""
    kw = _published_inputs()
    order = np.random.default_rng(1).permutation(len(kw["y"]))  # any order: either basin passes
    shuffled = {k: np.asarray(v)[order] for k, v in kw.items()}
    fit = fit_law("data-constrained", loss=True, fix=PUBLISHED, **shuffled)
    _assert_a_basin_of_the_published_protocol(fit.params, fit.objective, fit.r2, fit.notes)


def _assert_a_basin_of_the_published_protocol(params: dict, objective: float, r2: float, notes: list) -> None:
    rd, rn = params["R_D_star"], params["R_N_star"]
    if rd < 30:  # the published basin (every unperturbed run measured)
        assert rd == pytest.approx(15.37, abs=DATACON_TOL["R_D_star"])
        assert rn == pytest.approx(5.315, abs=DATACON_TOL["R_N_star"])
        assert round(objective, 5) == 0.01583
        assert objective == pytest.approx(0.0158259, abs=2e-7)
        assert round(r2, 3) == 0.772
    else:  # the neighbouring basin: ~1.5x the measured half-spread around its centre
        assert rd == pytest.approx(46.92, abs=0.45) and rn == pytest.approx(2.332, abs=0.012)
        assert objective == pytest.approx(0.0158074, abs=2e-7)
    (note,) = notes
    assert "R_D_star, R_N_star weakly determined" in note and "lower" in note


@needs_data
def test_objective_definition_and_the_float64_minimum_near_the_published_point() -> None:
    """The objective is the published one (sum of Huber_1e-3 of log residuals: 0.0158259 at the published
    point). Converged in float64 from there, L-BFGS-B moves to the basin's exact minimum R_D* = 15.372:
    the published 15.388 is where float32 L-BFGS stopped, 3e-10 higher, below float32 resolution."""
    kw = _published_inputs()
    law = get_law("data-constrained")
    prep = prepare(law, kw.pop("y"), kw, loss=True, fix=PUBLISHED)
    start = law.from_params({**PUBLISHED, "R_D_star": 15.387756, "R_N_star": 5.309743}, prep.centre)
    published = huber_objective(start, prep, 1e-3, np.ones(prep.n))[0] * 1e-3
    assert published == pytest.approx(0.0158259366, abs=2e-9)  # the README's, computed there in float32
    opt = fit_lse(prep, delta=1e-3, starts=start[None])
    assert opt.params["R_D_star"] == pytest.approx(15.372, abs=0.002)
    assert opt.params["R_N_star"] == pytest.approx(5.315, abs=0.002)
    assert published - 1e-8 < opt.objective < published


@needs_data
def test_published_estimator_with_one_repetition_parameter_fixed() -> None:
    """One basin each; its centre moves with the row order too (6 random orders measured: R_D* 15.383 to
    15.406 with R_N* fixed, R_N* 5.309 to 5.314 with R_D* fixed): DATACON_TOL around the middle."""
    kw = _published_inputs()
    fit = fit_law("data-constrained", loss=True, fix={**PUBLISHED, "R_N_star": 5.309743}, **kw)
    assert fit.params["R_D_star"] == pytest.approx(15.395, abs=DATACON_TOL["R_D_star"])
    assert fit.objective == pytest.approx(0.0158259, abs=2e-7) and fit.r2 == pytest.approx(0.772, abs=1e-3)
    fit = fit_law("data-constrained", loss=True, fix={**PUBLISHED, "R_D_star": 15.387756}, **kw)
    assert fit.params["R_N_star"] == pytest.approx(5.315, abs=DATACON_TOL["R_N_star"])


def test_published_estimator_applies_only_to_the_repetition_parameters() -> None:
    """With a Chinchilla coefficient free the law's own grid search runs (the published estimator fits
    R_D*, R_N* alone); on synthetic data with the five held at their true values it recovers R_D*, R_N*."""
    true, x = synthetic()
    y = get_law("data-constrained").predict(true, x)
    law = get_law("data-constrained")
    partly = {k: true[k] for k in ("alpha", "beta")}
    assert datacon_published_fit(prepare(law, y, x, loss=True, fix=partly), 1e-3) is None
    fixed = {k: true[k] for k in ("E_inf", "A", "alpha", "B", "beta")}
    fit = fit_law("data-constrained", y=y, loss=True, fix=fixed, **x)
    assert fit.params["R_D_star"] == pytest.approx(15.0, rel=1e-3)
    assert fit.params["R_N_star"] == pytest.approx(5.0, rel=1e-3)
    assert fit.notes == []  # no lower minimum elsewhere on exact data
