"""`--objective` (huber-log, squares-log, squares), `--frontier-bins` and `--fit-where`, on synthetic data
drawn from a known law.

Tolerances: with noise sigma on n points the estimates scatter by ~ sigma / sqrt(n) times the law's
sensitivity; the noiseless cases must recover the truth to the optimiser's precision (1e-4 relative),
the noisy ones within 4 standard errors measured by refitting 20 noise draws (see each test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit

from clipscale.errors import ClipscaleError
from clipscale.fit import fit_law, fit_table
from clipscale.fit.analyses.frontier import pareto_edge_rows

TRUE = {"A": 30.0, "C0": 3e8, "alpha": -0.23, "E_inf": 0.11}
C = np.geomspace(1e8, 1e12, 40)


def offset(c: np.ndarray, a: float, c0: float, alpha: float, e_inf: float) -> np.ndarray:
    return a * (c + c0) ** alpha + e_inf


E = offset(C, *TRUE.values())


@pytest.mark.parametrize("objective", ["huber-log", "squares-log", "squares"])
def test_each_objective_recovers_a_noiseless_law(objective: str) -> None:
    fit = fit_law("offset", y=E, C=C, objective=objective)
    assert fit.objective_kind == objective
    assert fit.to_dict()["objective_kind"] == objective
    for k, v in TRUE.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-3), k


def test_squares_is_curve_fit_on_additive_noise() -> None:
    """Additive Gaussian noise on E (what least squares on E assumes): `squares` lands where scipy's
    curve_fit lands from the true parameters, to 1e-3 of alpha and E_inf (both minimise the same sum);
    huber-log, a different estimator, does not."""
    rng = np.random.default_rng(1)
    y = E + rng.normal(0.0, 0.004, E.size)
    ref, _ = curve_fit(offset, C, y, p0=list(TRUE.values()), maxfev=20000)
    ours = fit_law("offset", y=y, C=C, objective="squares")
    assert ours.params["alpha"] == pytest.approx(ref[2], abs=1e-3)
    assert ours.params["E_inf"] == pytest.approx(ref[3], abs=1e-3)
    resid = lambda p: float(np.sum((y - offset(C, *p)) ** 2))  # noqa: E731
    assert resid(list(ours.params.values())) <= resid(ref) * (1 + 1e-6)
    huber = fit_law("offset", y=y, C=C, objective="huber-log")
    assert resid(list(huber.params.values())) > resid(ref) * (1 + 1e-3)


@pytest.mark.parametrize("objective", ["huber-log", "squares-log", "squares"])
def test_each_objective_recovers_the_law_under_its_noise(objective: str) -> None:
    """Noise of the matching kind (multiplicative for the log objectives, additive for squares), sigma
    0.5 %: 20 draws give alpha's spread s; every draw lands within 4 s of the truth and the draws' mean
    within 4 s / sqrt(20)."""
    rng = np.random.default_rng(2)
    alphas = []
    for _ in range(20):
        if objective == "squares":
            y = E + rng.normal(0.0, 0.005 * E.mean(), E.size)
        else:
            y = E * np.exp(rng.normal(0.0, 0.005, E.size))
        alphas.append(fit_law("offset", y=y, C=C, objective=objective).params["alpha"])
    alphas = np.array(alphas)
    s = alphas.std(ddof=1)
    assert s < 0.05
    assert np.all(np.abs(alphas - TRUE["alpha"]) < 4 * s + 1e-6)
    assert abs(alphas.mean() - TRUE["alpha"]) < 4 * s / np.sqrt(20)


def test_power_law_squares_recovers_a_line_on_y_itself() -> None:
    rng = np.random.default_rng(3)
    y = 2.0 * C**-0.1
    noisy = y + rng.normal(0.0, 0.002, y.size)
    fit = fit_law("power", y=noisy, C=C, objective="squares")
    ref, _ = curve_fit(lambda c, a, al: a * c**al, C, noisy, p0=[2.0, -0.1])
    assert fit.params["A"] == pytest.approx(ref[0], rel=1e-4)
    assert fit.params["alpha"] == pytest.approx(ref[1], abs=1e-5)


def test_bootstrap_refits_use_the_objective() -> None:
    """Refits minimise the chosen objective: on additive noise the squares refits centre on the squares
    estimate, not on huber-log's (the two estimates differ by far more than the refits' spread / sqrt)."""
    rng = np.random.default_rng(4)
    y = E + rng.normal(0.0, 0.004, E.size)
    sq = fit_law("offset", y=y, C=C, objective="squares", bootstrap=40, seed=0)
    hub = fit_law("offset", y=y, C=C, objective="huber-log")
    med = float(np.median(np.asarray(sq.bootstrap_params)[:, 2]))
    assert abs(med - sq.params["alpha"]) < abs(med - hub.params["alpha"])


def test_objective_name_is_checked() -> None:
    with pytest.raises(ClipscaleError, match="--objective 'l1'"):
        fit_law("offset", y=E, C=C, objective="l1")


# ------------------------------------------------------------------------------- frontier recipe
def _runs(seed: int = 0) -> pd.DataFrame:
    """Many runs per compute: the frontier is the law itself; the others lie above it."""
    rng = np.random.default_rng(seed)
    c = np.geomspace(1e3, 1e7, 60)
    base = 2.0 * c**-0.2
    rows = [{"C": x, "E": b, "frontier": True} for x, b in zip(c, base, strict=True)]
    for x, b in zip(c, base, strict=True):
        rows += [{"C": x * f, "E": b * (1.05 + rng.random()), "frontier": False} for f in (0.9, 1.1)]
    return pd.DataFrame(rows)


def test_pareto_edge_rows_follow_the_recipe() -> None:
    c = np.array([1.0, 1.5, 2.5, 3.0, 5.0, 7.0, 8.0])
    e = np.array([0.9, 0.8, 0.85, 0.7, 0.75, 0.6, 0.5])
    rows = pareto_edge_rows(c, e, 4)  # edges 1, 2, 4, 8: bins [1,2) [2,4) [4,8), then C = 8
    assert rows.tolist() == [1, 3, 5, 6]
    assert pareto_edge_rows(c, np.array([0.9, 0.8, 0.85, 0.7, 0.75, 0.6, 0.65]), 4).tolist() == [1, 3, 5]


def test_frontier_bins_and_fit_where_recover_the_frontier_law() -> None:
    df = _runs()
    n_edges = int(np.log2(df.C.max() / 1500))
    doc = fit_table(df, law="power", y="E", C="C", frontier="pareto", frontier_bins=n_edges,
                    fit_where="C <= 1e6")
    fit = doc["fits"][0]
    assert fit["params"]["alpha"] == pytest.approx(-0.2, abs=1e-6)
    assert fit["params"]["A"] == pytest.approx(2.0, rel=1e-5)
    pts = fit["frontier_points"]
    assert len(pts["C"]) == len(pts["fitted"]) and max(pts["C"]) > 1e6  # the frontier is over all runs
    assert all(f == (c <= 1e6) for c, f in zip(pts["C"], pts["fitted"], strict=True))
    assert fit["n_fitted"] == sum(pts["fitted"]) < len(pts["C"])
    assert doc["frontier_bins"] == n_edges and doc["fit_where"] == "C <= 1e6"


def test_fit_where_differs_from_where() -> None:
    """--where filters before the frontier (its bins then end at 1e6); --fit-where after it (bins to 4e6,
    so the run at 1e5 shares a bin with the better one at 1e6 and is not on the frontier)."""
    df = pd.DataFrame({"C": [1e3, 2e3, 1e5, 1e6, 4e6], "E": [0.5, 0.45, 0.35, 0.3, 0.2]})
    opts = {"law": "power", "y": "E", "C": "C", "frontier": "pareto", "frontier_bins": 3}
    after = fit_table(df, fit_where="C < 2e6", **opts)["fits"][0]
    before = fit_table(df, where="C < 2e6", **opts)["fits"][0]
    assert after["frontier_points"]["C"] == [2e3, 1e6, 4e6]
    assert after["frontier_points"]["fitted"] == [True, True, False]
    assert before["frontier_points"]["C"] == [2e3, 1e5, 1e6] and before["n_fitted"] == 3


def test_frontier_bins_is_checked() -> None:
    df = _runs()
    with pytest.raises(ClipscaleError, match="--frontier-bins"):
        fit_table(df, law="power", y="E", C="C", frontier="hull", frontier_bins=8)
    with pytest.raises(ClipscaleError, match="--frontier-bins"):
        fit_table(df, law="power", y="E", C="C", frontier="pareto", frontier_bins=1)


# ------------------------------------------------------------------------------- identifiability, CIs
def test_dof_warning_suppresses_r2_and_the_ci() -> None:
    """A 4-parameter law through 5 points (< parameters + 2): a dof warning, no R², no CI as a number."""
    c = np.geomspace(1e8, 1e12, 5)
    fit = fit_law("offset", y=offset(c, *TRUE.values()), C=c, bootstrap=20, seed=0)
    assert "warning" in fit.dof and fit.dof == {**fit.dof, "n_fitted": 5, "n_free": 4}
    assert np.isnan(fit.r2) and np.isnan(fit.r2_log)
    assert fit.ci == {} and fit.ci_unavailable and fit.to_dict()["r2"] != fit.to_dict()["r2"]
    enough = fit_law("offset", y=E, C=C)
    assert "warning" not in enough.dof and enough.r2 > 0.99


def test_duplicate_rows_are_named() -> None:
    y, c = np.r_[E, E[3]], np.r_[C, C[3]]
    fit = fit_law("offset", y=y, C=c)
    assert len(fit.warnings) == 1 and "positions 3, 40" in fit.warnings[0]
    assert fit_law("offset", y=E, C=C).warnings == []


def test_bootstrap_reports_median_failures_and_too_few_refits() -> None:
    """The refits' median beside the estimate; a CI from fewer than 2/3 successful refits is unavailable
    (two runs of one C each: half the resamples draw one run twice, hold one C, and the refit fails)."""
    rng = np.random.default_rng(5)
    y = E * np.exp(rng.normal(0.0, 0.005, E.size))
    fit = fit_law("offset", y=y, C=C, bootstrap=30, seed=0)
    assert set(fit.bootstrap_median) >= {"alpha", "E_inf"} and fit.ci and fit.ci_unavailable is None
    assert fit.bootstrap_median["alpha"] == pytest.approx(fit.params["alpha"], abs=0.02)
    few = fit_law("power", y=[0.5, 0.49, 0.4, 0.41], C=[1, 1, 10, 10], groups=np.array([0, 0, 1, 1]),
                  bootstrap=60, seed=0)
    assert few.bootstrap_failed > 20 and few.ci == {} and "fewer than 2/3" in few.ci_unavailable
    assert few.to_dict()["bootstrap_failed"] == few.bootstrap_failed and few.bootstrap_params == []
