"""Frontiers (--frontier) chosen apart from the law: hand cases, any law on any frontier, the cherti alias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipscale.errors import ClipscaleError
from clipscale.fit import fit_law, fit_table
from clipscale.fit.analyses.frontier import hull_rows, pareto_rows
from clipscale.fit.laws import get_law

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper"


def test_pareto_hand_case() -> None:
    # factor-2 bins from C = 1: [1, 2) [2, 4) [4, 8) [8, 16) [16, 32)
    c = np.array([1.0, 1.5, 2.5, 3.0, 5.0, 9.0, 17.0])
    e = np.array([0.9, 0.8, 0.85, 0.7, 0.75, 0.5, 0.55])
    # bin minima: 0.8 (row 1), 0.7 (3), 0.75 (4: not below 0.7, dropped), 0.5 (5), 0.55 (6: dropped)
    np.testing.assert_array_equal(pareto_rows(c, e), [1, 3, 5])


def test_hull_hand_case() -> None:
    c = np.exp(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 4.0]))
    e = np.exp(np.array([0.0, -0.2, -1.5, -1.6, -2.0, -1.0]))
    # (1, -0.2) lies above the chord (0, 0)-(2, -1.5); (3, -1.6) above (2, -1.5)-(4, -2.0)
    np.testing.assert_array_equal(hull_rows(c, e), [0, 2, 4])


def sweep(law: str, true: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Points on a known law (the envelope) plus runs above it: the frontier's job is to find the envelope."""
    c_env = np.geomspace(1e6, 1e12, 49)  # 8 per decade: every factor-2 pareto bin holds envelope points
    e_env = get_law(law).predict(true, {"C": c_env})
    rng = np.random.default_rng(0)
    c_off = np.exp(rng.uniform(np.log(1e6), np.log(1e12), 60))
    e_off = get_law(law).predict(true, {"C": c_off}) * np.exp(rng.uniform(0.05, 0.6, 60))
    return np.concatenate([c_env, c_off]), np.concatenate([e_env, e_off])


@pytest.mark.parametrize("frontier", ["pareto", "hull"])
@pytest.mark.parametrize(
    ("law", "true"),
    [
        ("power", {"A": 3.0, "alpha": -0.12}),
        ("saturating", {"A": 5.0, "alpha": -0.2, "E_inf": 0.1}),
        ("offset", {"A": 30.0, "C0": 3e7, "alpha": -0.25, "E_inf": 0.12}),
    ],
)
def test_any_law_on_a_frontier_recovers_the_envelope(law: str, true: dict[str, float], frontier: str) -> None:
    c, e = sweep(law, true)
    fit = fit_law(law, y=e, C=c, frontier=frontier)
    assert fit.frontier == frontier and fit.n_points == 109 and fit.n_fitted < 109
    for k, v in true.items():
        assert fit.params[k] == pytest.approx(v, rel=0.02), k
    assert fit_law(law, y=e, C=c).params != pytest.approx(fit.params, rel=0.02)  # all points: biased


def test_cherti_alias_numbers_unchanged_and_other_laws_on_it() -> None:
    c, e = sweep("power", {"A": 3.0, "alpha": -0.12})
    alias = fit_law("frontier", y=e, C=c)
    power = fit_law("power", y=e, C=c, frontier="cherti")
    assert alias.params == pytest.approx(power.params, rel=1e-12)
    assert alias.frontier == "cherti" and alias.n_fitted == 5
    xs = np.log10(alias.frontier_points["C"])  # bin centres of 5 equal bins over [6, 12.1]
    np.testing.assert_allclose(np.diff(xs), 6.1 / 5)
    assert min(alias.frontier_points["y"]) == pytest.approx(e.min())
    sat = fit_law("saturating", y=e, C=c, frontier="cherti")
    assert sat.n_fitted == 5 and sat.frontier == "cherti"
    with pytest.raises(ClipscaleError, match="use --law power --frontier pareto"):
        fit_law("frontier", y=e, C=c, frontier="pareto")
    with pytest.raises(
        ClipscaleError, match="--frontier 'convex': expected one of none, cherti, pareto, hull"
    ):
        fit_law("power", y=e, C=c, frontier="convex")


def test_multi_input_law_on_a_frontier_needs_c_and_bootstraps() -> None:
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 8))
    n, d = n.ravel(), d.ravel()
    loss = 1.69 + 400.0 / n**0.34 + 410.0 / d**0.28
    with pytest.raises(ClipscaleError, match="--frontier hull needs the compute --C"):
        fit_law("chinchilla", y=loss, N=n, D=d, loss=True, frontier="hull")
    df = pd.DataFrame({"N": n, "D": d, "loss": loss})
    doc = fit_table(
        df,
        law="chinchilla",
        N="N",
        D="D",
        C="6 * N * D",
        y="loss",
        loss=True,
        frontier="pareto",
        bootstrap=20,
    )
    f = doc["fits"][0]
    assert doc["frontier"] == "pareto" and f["n_fitted"] < 64 and f["bootstrap_failed"] < 20
    with pytest.raises(ClipscaleError, match="--frontier pareto needs --C"):
        fit_table(df, law="chinchilla", N="N", D="D", y="loss", loss=True, frontier="pareto")


@pytest.mark.skipif(not PAPER.is_dir(), reason="../shared/paper not present")
def test_paper_saturating_all_points_flags_e_inf_and_frontiers_do_not() -> None:
    """The problem the issue reports: E_inf of the saturating law at its lower bound on all points of the
    paper's sweep, unflagged. Flagged now; on the hull frontier it is determined."""
    df = pd.read_csv(PAPER / "zeroshot_results.csv")
    where = "downstream_dataset == 'imagenet1k' and upstream_dataset != 'CLIP-WIT'"
    kw = {"law": "saturating", "C": "gmacs_total", "y": "acc1", "error": True, "where": where}
    assert fit_table(df, **kw)["fits"][0]["at_bound"] == ["E_inf"]
    hull = fit_table(df, frontier="hull", **kw)["fits"][0]
    assert hull["at_bound"] == [] and 0.05 < hull["params"]["E_inf"] < 0.3
    # the paper's own numbers: --law frontier = power on cherti (E = 5.86·C^-0.111)
    alias = fit_table(df, law="frontier", C="gmacs_total", y="acc1", error=True, where=where)["fits"][0]
    power = fit_table(df, law="power", frontier="cherti", C="gmacs_total", y="acc1", error=True, where=where)[
        "fits"
    ][0]
    assert alias["params"]["alpha"] == pytest.approx(-0.1114, abs=5e-4)
    assert power["params"] == pytest.approx(alias["params"], rel=1e-12)
