"""Fitting stage on synthetic data: recovery, frontier binning, bootstrap coverage, bad input, CLI keys."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.fit import FitResult, fit_law, fit_table, list_laws
from clipscale.fit.analyses.frontier import frontier_points
from clipscale.fit.estimation._blas import single_threaded_blas
from clipscale.fit.estimation.estimate import huber_objective
from clipscale.fit.estimation.points import prepare
from clipscale.fit.laws import derived_quantities, get_law, lse_and_jacobian
from clipscale.fit.laws.joint import unique_seen


def test_registry_lists_laws_and_rejects_unknown() -> None:
    assert list_laws() == [
        "power", "frontier", "saturating", "offset", "chinchilla", "joint", "data-constrained"
    ]
    with pytest.raises(ClipscaleError, match="valid laws: power, frontier"):
        fit_law("kaplan", y=np.array([0.5, 0.4]), C=np.array([1.0, 2.0]))


def test_power_recovers_exact_parameters() -> None:
    c = np.geomspace(1e9, 1e13, 12)
    fit = fit_law("power", y=3.0 * c**-0.12, C=c)
    assert fit.params["A"] == pytest.approx(3.0, rel=1e-9)
    assert fit.params["alpha"] == pytest.approx(-0.12, rel=1e-9)
    assert fit.r2_log == pytest.approx(1.0)


def test_frontier_binning_hand_case() -> None:
    # log10 C in [0, 4.1]: 5 bins of width 0.82 -> centres 0.41, 1.23, 2.05, 2.87, 3.69; bin 3 empty.
    x = np.array([0.0, 0.5, 1.0, 1.5, 3.0, 3.5, 4.0])
    y = np.array([0.0, -0.1, -0.3, -0.2, -0.6, -0.9, -0.8])
    xs, ys = frontier_points(x, y)
    np.testing.assert_allclose(xs, [0.41, 1.23, 2.87, 3.69])
    np.testing.assert_allclose(ys, [-0.1, -0.3, -0.6, -0.9])
    c, e = 10**x, 10**y
    fit = fit_law("frontier", y=e, C=c)
    slope, icpt = np.polyfit(xs, ys, 1)
    assert fit.params["alpha"] == pytest.approx(slope)
    assert fit.params["A"] == pytest.approx(10**icpt)
    assert fit.n_points == 7


def test_saturating_and_chinchilla_recover_parameters() -> None:
    c = np.geomspace(1e6, 1e12, 25)
    fit = fit_law("saturating", y=0.1 + 5.0 * c**-0.2, C=c)
    assert fit.params["E_inf"] == pytest.approx(0.1, rel=1e-3)
    assert fit.params["alpha"] == pytest.approx(-0.2, rel=1e-3)
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    n, d = n.ravel(), d.ravel()
    true = {"A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28, "E_inf": 1.69}
    loss = true["E_inf"] + true["A"] / n ** true["alpha"] + true["B"] / d ** true["beta"]
    fit = fit_law("chinchilla", y=loss, N=n, D=d, loss=True)
    for k, v in true.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-3), k
    assert fit.n_starts_at_best >= 2
    assert fit.derived["N_opt_exponent"] == pytest.approx(0.28 / 0.62, rel=1e-3)


def test_joint_recovers_parameters_and_caps_unique_data_at_samples_seen() -> None:
    np.testing.assert_allclose(unique_seen(np.array([1e9, 1e9]), np.array([5e8, 3e10])), [5e8, 1e9])
    rng = np.random.default_rng(0)
    n = rng.choice([7.4, 20.6, 87.7, 191.0], 40)
    u = rng.choice([8e7, 4e8, 2e9], 40)
    s = rng.choice([1e9, 3e9, 1.3e10, 3.4e10], 40)
    true = {"A": 3.7, "alpha": 0.13, "beta": 0.09, "G": 3e9, "kappa": 0.12, "rho": 0.15, "gamma": 1.4}
    law = FitResult("joint", true)
    y = law.predict(N=n, U=u, S=s)
    # Repeats help (more samples seen, same unique data) but less than fresh data does ...
    e = law.predict(N=[20.6] * 3, U=[8e7, 8e7, 3.4e10], S=[3e9, 3.4e10, 3.4e10])
    assert e[0] > e[1] > e[2]
    # ... a bigger model loses more to a small unique set (kappa > 0) ...
    big, small = (law.predict(N=[m] * 2, U=[8e7, 2e9], S=[3.4e10] * 2) for m in (191, 7.4))
    assert big[0] - big[1] > small[0] - small[1]
    # ... and below one epoch U' = min(U, S) = S, R = 1: a dataset larger than S changes nothing.
    below = law.predict(N=[20.6] * 2, U=[5e9, 5e10], S=[3e9] * 2)
    assert below[0] == pytest.approx(below[1], rel=1e-12)
    fit = fit_law("joint", y=y, N=n, U=u, S=s)
    for k, v in true.items():
        assert fit.params[k] == pytest.approx(v, rel=2e-2), k
    # Compute-optimal size with unlimited data: N_opt ∝ C^((gamma-beta)/(kappa+gamma+alpha-beta)).
    assert fit.derived["N_opt_exponent"] == pytest.approx((1.4 - 0.09) / (0.12 + 1.4 + 0.13 - 0.09), rel=2e-2)
    assert fit.derived["N_opt_exponent"] + fit.derived["D_opt_exponent"] == pytest.approx(1.0)


def test_joint_compute_optimal_size_matches_a_numerical_search() -> None:
    """The closed-form exponent is what `predict`'s allocation finds when unique data is unlimited."""
    from clipscale.fit.predict import optimal_allocation

    law = FitResult(
        "joint", {"A": 3.7, "alpha": 0.13, "beta": 0.09, "G": 3e9, "kappa": 0.12, "rho": 0.15, "gamma": 1.4}
    )
    law.derived = derived_quantities(get_law("joint"), law.params)
    n1, n2 = (optimal_allocation(law, c, unique=1e30)["N"] for c in (1e20, 1e22))
    assert np.log(n2 / n1) / np.log(100) == pytest.approx(law.derived["N_opt_exponent"], rel=1e-3)
    # No interior optimum (alpha <= beta: at fixed compute the smallest model wins): no exponent.
    assert derived_quantities(get_law("joint"), {**law.params, "alpha": 0.05}) == {}


def test_bootstrap_ci_contains_truth_and_resamples_runs() -> None:
    rng = np.random.default_rng(1)
    c = np.repeat(np.geomspace(1e9, 1e13, 10), 3)
    y = 3.0 * c**-0.12 * np.exp(rng.normal(0, 0.02, c.size))
    runs = np.repeat(np.arange(10), 3)
    fit = fit_law("power", y=y, C=c, bootstrap=300, seed=0, groups=runs)
    lo, hi = fit.ci["alpha"]
    assert lo < -0.12 < hi and hi - lo < 0.02
    assert len(fit.bootstrap_params) == 300
    again = FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again.params == fit.params and again.ci == fit.ci


def test_bootstrap_resamples_do_not_depend_on_run_names_or_row_order() -> None:
    """A study's run ids hash its data paths: moving the study's folder renames every run and may reorder
    the table. The same points must give the same resamples, hence the same CIs."""
    rng = np.random.default_rng(2)
    c = np.repeat(np.geomspace(1e9, 1e13, 8), 2)
    y = 3.0 * c**-0.12 * np.exp(rng.normal(0, 0.03, c.size))
    runs = np.repeat([f"run-{i}" for i in range(8)], 2)
    fit = fit_law("power", y=y, C=c, bootstrap=50, seed=0, groups=runs)
    renamed = np.repeat([f"{h}-x" for h in "hgfedcba"], 2)  # the opposite sort order of the names
    assert fit_law("power", y=y, C=c, bootstrap=50, seed=0, groups=renamed).bootstrap_params == \
        fit.bootstrap_params  # bit for bit
    # rows in another order: the same draws; only float64 summation order differs (~1e-14 measured)
    order = rng.permutation(c.size)
    moved = fit_law("power", y=y[order], C=c[order], bootstrap=50, seed=0, groups=renamed[order])
    np.testing.assert_allclose(moved.bootstrap_params, fit.bootstrap_params, rtol=1e-6)
    alone = fit_law("power", y=y[order], C=c[order], bootstrap=50, seed=0)  # each point its own run
    in_order = fit_law("power", y=y, C=c, bootstrap=50, seed=0)
    np.testing.assert_allclose(alone.bootstrap_params, in_order.bootstrap_params, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y": [0.5, 1.2, 0.3], "C": [1, 2, 3]}, r"y must be an error in \(0, 1\].*position\(s\) 1"),
        ({"y": [0.5, 0.4, 0.3], "C": [1, -2, 3]}, r"C must be > 0: 1 bad row"),
        ({"y": [0.5, np.nan, 0.3], "C": [1, 2, 3]}, r"y must be a finite number"),
        ({"y": [0.5], "C": [1]}, r"2 parameters but only 1 points"),
        ({"y": [0.5, 0.4], "C": [1, 2, 3]}, r"C has 3 values but y has 2"),
        ({"y": [0.5, 0.4]}, r"needs input C"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ClipscaleError, match=match):
        fit_law("power", **kwargs)


def test_fit_table_expressions_where_by_and_bad_columns() -> None:
    c = np.geomspace(1e9, 1e12, 8)
    df = pd.DataFrame(
        {"my C": np.tile(c, 2), "acc": np.r_[1 - 2 * c**-0.1, 1 - 3 * c**-0.1], "grp": ["a"] * 8 + ["b"] * 8}
    )
    doc = fit_table(df, law="power", C="`my C` * 1", y="acc", error=True, by="grp")
    assert [f["group"] for f in doc["fits"]] == ["a", "b"]
    assert doc["comparison"]["A"]["b"] == pytest.approx(3.0)
    assert "differences" not in doc  # CIs need --bootstrap
    one = fit_table(df, law="power", C="`my C`", y="1 - acc", where="grp == 'a'")
    assert one["fits"][0]["params"]["A"] == pytest.approx(2.0)
    with pytest.raises(ClipscaleError, match="--C 'nope'"):
        fit_table(df, law="power", C="nope", y="acc", error=True)
    with pytest.raises(ClipscaleError, match=r"--y '100 \* acc' must be an error in \(0, 1\].*16 bad row"):
        fit_table(df, law="power", C="`my C`", y="100 * acc")
    with pytest.raises(ClipscaleError, match="--where"):
        fit_table(df, law="power", C="`my C`", y="acc", error=True, where="grp == 'zzz'")
    for option in ("where", "holdout"):  # a number is not a selection of rows
        with pytest.raises(ClipscaleError, match=f"--{option} '`my C`': not a boolean expression"):
            fit_table(df, law="power", C="`my C`", y="acc", error=True, **{option: "`my C`"})
    gaps = df.assign(grp=df.grp.where(df.index % 5 > 0))  # 4 rows without a group
    for option in ("by", "run"):  # pandas' groupby would drop those rows silently
        missing = f"--{option} 'grp': 4 row\\(s\\) have no value, at position\\(s\\) 0, 5, 10, 15;"
        with pytest.raises(ClipscaleError, match=missing):
            fit_table(gaps, law="power", C="`my C`", y="acc", error=True, **{option: "grp"})


def test_by_with_bootstrap_says_whether_two_groups_scale_differently() -> None:
    rng = np.random.default_rng(5)
    c = np.tile(np.geomspace(1e9, 1e12, 12), 3)
    noise = np.exp(rng.normal(0, 0.01, c.size))
    df = pd.concat(
        [
            pd.DataFrame({"C": c, "E": 2 * c**-0.10 * noise, "g": "a"}),
            pd.DataFrame({"C": c, "E": 3 * c**-0.12 * noise[::-1], "g": "b"}),
            pd.DataFrame({"C": c, "E": 2.1 * c**-0.10 * noise, "g": "c"}),
        ]
    )
    doc = fit_table(df, law="power", C="C", y="E", by="g", bootstrap=200)
    diff = {tuple(d["groups"]): d for d in doc["differences"]}
    assert set(diff) == {("a", "b"), ("a", "c"), ("b", "c")} and {d["param"] for d in diff.values()} == {
        "alpha"
    }
    assert diff[("a", "b")]["difference"] == pytest.approx(0.02, abs=2e-3)
    assert diff[("a", "b")]["excludes_zero"] and diff[("b", "c")]["excludes_zero"]
    assert not diff[("a", "c")]["excludes_zero"]  # same exponent, different coefficient


def test_parameters_the_points_cannot_determine_are_named_not_guessed() -> None:
    n = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
    y = 0.2 + 0.3 / n
    with pytest.raises(ClipscaleError, match=r"'chinchilla': beta cannot be estimated.*D 1"):
        fit_law("chinchilla", y=y, N=n, D=np.full(8, 5.0))
    # All runs below one epoch: nothing says what repeating data costs.
    s = np.array([1e7, 2e7, 1e7, 3e7, 1e7, 2e7, 1e7, 3e7])
    with pytest.raises(ClipscaleError, match=r"rho cannot be estimated.*no run saw a sample twice"):
        fit_law("joint", y=y, N=n, U=np.full(8, 1e8), S=s)
    # One dataset, one length: the data term's coefficient and exponents are confounded.
    with pytest.raises(ClipscaleError, match=r"beta, G, rho, gamma cannot be estimated"):
        fit_law("joint", y=y, N=n, U=np.full(8, 1e8), S=np.full(8, 1e9))


def test_cli_fit_json_save_predict_plot(tmp_path, capsys) -> None:
    c = np.geomspace(1e9, 1e12, 10)
    table = tmp_path / "t.csv"
    pd.DataFrame({"C": c, "acc1": 1 - 2 * c**-0.1, "run": np.arange(10)}).to_csv(table, index=False)
    fit_json, plot = tmp_path / "fit.json", tmp_path / "fit.png"
    rc = main(
        [
            "fit",
            str(table),
            "--law",
            "power",
            "--C",
            "C",
            "--y",
            "acc1",
            "--error",
            "--run",
            "run",
            "--bootstrap",
            "50",
            "--loo",
            "--holdout",
            "C > 2e11",
            "--json",
            "--save",
            str(fit_json),
            "--plot",
            str(plot),
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    f = doc["fits"][0]
    assert {
        "law",
        "params",
        "ci",
        "n_points",
        "objective",
        "n_starts",
        "n_starts_at_best",
        "r2_log",
        "validation",
    } <= set(f)
    assert set(f["params"]) == {"A", "alpha"} and set(f["ci"]) == {"A", "alpha"}
    assert f["validation"]["loo"]["mae_pct"] < 1e-6 and f["validation"]["holdout"]["n"] == 3
    assert plot.stat().st_size > 1000
    assert main(["predict", str(fit_json), "--C", "1e13", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)["prediction"]
    assert pred["predicted_error"][0] == pytest.approx(2 * 1e13**-0.1)
    assert pred["extrapolation"] == {"C": pytest.approx(10.0)}  # fitted on C in [1e9, 1e12]
    assert main(["predict", str(fit_json), "--C", "3e9,1e11", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["extrapolation"] == {}
    assert pred["ci_low"][0] <= pred["predicted_error"][0] <= pred["ci_high"][0]
    assert main(["fit", str(table), "--law", "power", "--C", "nope", "--y", "acc1"]) == 2
    assert "--C 'nope': not a column" in capsys.readouterr().err


def test_predict_allocation_on_a_chinchilla_fit(tmp_path, capsys) -> None:
    fit = FitResult("chinchilla", {"A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28, "E_inf": 1.69})
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"fits": [{"group": None, **fit.to_dict()}]}))
    assert main(["predict", str(path), "--budget", "5.76e23", "--k", "6", "--json"]) == 0
    alloc = json.loads(capsys.readouterr().out)["allocation"]
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)  # Hoffmann et al. eq. 4 closed form
    assert alloc["N"] == pytest.approx(g * (5.76e23 / 6) ** (0.28 / 0.62), rel=1e-3)
    ladder = ["--ladder", "1e9,7e10,3e11", "--json"]
    assert main(["predict", str(path), "--budget", "5.76e23", "--k", "6", *ladder]) == 0
    assert json.loads(capsys.readouterr().out)["allocation"]["N"] == 7e10


def test_multi_input_figure_draws_every_series_with_extrapolation_and_band() -> None:
    from clipscale.fit.plot import _pyplot, draw_multi_input_fit

    rng = np.random.default_rng(6)
    grid = [(n, u, s) for n in (7.4, 20.6, 87.7) for u in (8e7, 2e9) for s in (3e9, 1.3e10, 3.4e10)]
    n, u, s = (np.array(v) for v in zip(*grid, strict=True))
    true = FitResult(
        "joint", {"A": 3.7, "alpha": 0.13, "beta": 0.09, "G": 3e9, "kappa": 0.12, "rho": 0.15, "gamma": 1.4}
    )
    y = true.predict(N=n, U=u, S=s) * np.exp(rng.normal(0, 0.003, n.size))
    fit = fit_law("joint", y=y, N=n, U=u, S=s, bootstrap=10)
    fig, ax = _pyplot().subplots()
    draw_multi_input_fit(ax, fit, {"N": n, "U": u, "S": s}, y)
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == 6  # 3 sizes x 2 datasets
    # each solid curve is the law itself, on the compute axis N·S
    x, e = solid[0].get_data()
    assert e == pytest.approx(fit.predict(N=[7.4] * len(x), U=[8e7] * len(x), S=np.asarray(x) / 7.4))
    from matplotlib.collections import PolyCollection

    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]  # scatters are PathCollections
    assert len(bands) == 6
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == ["N = 7.4", "N = 20.6", "N = 87.7"]
    _pyplot().close(fig)


def test_cli_plots_a_law_of_several_inputs_one_panel_per_group(tmp_path) -> None:
    """--law joint --by: compute axis N·S, a curve per (N, U) with its bootstrap band, one panel a group."""
    rng = np.random.default_rng(4)
    law = FitResult(
        "joint", {"A": 3.7, "alpha": 0.13, "beta": 0.09, "G": 3e9, "kappa": 0.12, "rho": 0.15, "gamma": 1.4}
    )
    grid = [(n, u, s) for n in (7.4, 20.6, 87.7) for u in (8e7, 2e9) for s in (3e9, 1.3e10, 3.4e10)]
    n, u, s = (np.array(v) for v in zip(*grid, strict=True))
    frames = [
        pd.DataFrame(
            {
                "N": n,
                "U": u,
                "S": s,
                "g": g,
                "acc": 1 - law.predict(N=n, U=u, S=s) * k * np.exp(rng.normal(0, 0.003, n.size)),
            }
        )
        for g, k in (("a", 1.0), ("b", 1.1))
    ]
    table, plot = tmp_path / "t.csv", tmp_path / "joint.png"
    pd.concat(frames).to_csv(table, index=False)
    argv = ["fit", str(table), "--law", "joint", "--N", "N", "--U", "U", "--S", "S", "--y", "acc", "--error"]
    assert main([*argv, "--by", "g", "--bootstrap", "20", "--plot", str(plot)]) == 0
    from PIL import Image

    width, height = Image.open(plot).size
    assert width > 1.8 * height  # two panels side by side
    one = tmp_path / "one.png"
    assert main([*argv, "--where", "g == 'a'", "--plot", str(one)]) == 0
    assert Image.open(one).size[0] < width


@pytest.mark.parametrize("law", ["saturating", "chinchilla", "joint"])
def test_fast_objective_matches_generic_gradient_and_finite_differences(law: str) -> None:
    rng = np.random.default_rng(3)
    x = {k: rng.uniform(1.0, 1e4, 20) for k in ("C", "N", "D", "U", "S")}
    spec = get_law(law)
    prep = prepare(spec, rng.uniform(0.2, 0.8, 20), x)
    theta, w = rng.normal(0, 0.3, len(spec.theta)), rng.integers(0, 3, 20).astype(float)
    f, g = huber_objective(theta, prep, 0.05, w)
    logp, jac = lse_and_jacobian(spec, theta, prep.logx, prep.raw, prep.centre)
    r = np.log(prep.y) - logp
    np.testing.assert_allclose(g, -(jac.T @ (w * np.clip(r, -0.05, 0.05))) / 0.05, rtol=1e-10, atol=1e-12)
    eps = 1e-6
    fd = [(huber_objective(theta + eps * e, prep, 0.05, w)[0] - f) / eps for e in np.eye(theta.size)]
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-3)


def test_single_threaded_blas_limits_and_restores() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    with single_threaded_blas():
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before
