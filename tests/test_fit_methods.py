"""Offset law, --fix, at_bound, validation units, and saved fits with real group names for predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.fit import fit_law, fit_table
from clipscale.fit.laws import get_law
from clipscale.fit.predict import load_fit
from clipscale.fit.result import save_fits, saved_fit_document
from clipscale.fit.table import fit_table_results


def test_offset_recovers_parameters_and_bootstraps() -> None:
    c = np.geomspace(1e6, 1e12, 25)
    true = {"A": 30.0, "C0": 3e7, "alpha": -0.25, "E_inf": 0.12}
    y = get_law("offset").predict(true, {"C": c})
    fit = fit_law("offset", y=y, C=c)
    for k, v in true.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-5), k
    noisy = y * np.exp(np.random.default_rng(0).normal(0, 0.003, c.size))
    fit = fit_law("offset", y=noisy, C=c, bootstrap=100)
    lo, hi = fit.ci["alpha"]
    assert lo < -0.25 < hi and fit.bootstrap_failed < 10
    # C0 -> 0: the data are a saturating law, the offset is undetermined and flagged
    flat = get_law("saturating").predict({"A": 5.0, "alpha": -0.2, "E_inf": 0.1}, {"C": c})
    assert fit_law("offset", y=flat, C=c).at_bound == ["C0"]


def test_fix_on_lines_and_non_linear_laws() -> None:
    c = np.geomspace(1e9, 1e13, 12)
    y = 3.0 * c**-0.12 * np.exp(np.random.default_rng(0).normal(0, 0.01, 12))
    fit = fit_law("power", y=y, C=c, fix={"alpha": -0.1})
    assert fit.params["alpha"] == -0.1 and fit.fixed == {"alpha": -0.1}
    assert fit_law("power", y=y, C=c, fix={"A": 3.0}).params["A"] == pytest.approx(3.0)
    sat = fit_law("saturating", y=0.1 + 5.0 * c**-0.2, C=c, fix={"E_inf": 0.1})
    assert sat.params["alpha"] == pytest.approx(-0.2, rel=1e-4) and sat.params["A"] == pytest.approx(
        5.0, rel=1e-3
    )
    # every parameter fixed: scored, not fitted (issue 19; tests/test_fit_bounds.py)
    assert fit_law("power", y=y, C=c, fix={"A": 3.0, "alpha": -0.1}).params == {"A": 3.0, "alpha": -0.1}


def test_cli_fix_at_bound_json_and_bad_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = np.geomspace(1e6, 1e12, 20)
    pd.DataFrame({"C": c, "E": 4.0 * c**-0.15}).to_csv(tmp_path / "t.csv", index=False)
    args = ["fit", str(tmp_path / "t.csv"), "--C", "C", "--y", "E"]
    assert main([*args, "--law", "saturating", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)["fits"][0]
    assert f["at_bound"] == ["E_inf"]  # a pure power law: no irreducible error to find
    assert main([*args, "--law", "saturating"]) == 0
    out = capsys.readouterr().out
    assert "E_inf = " in out and "AT BOUND" in out and "warning: E_inf ended at a bound" in out
    assert main([*args, "--law", "power", "--fix", "alpha=-0.15", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)["fits"][0]
    assert f["fixed"] == {"alpha": -0.15} and f["params"]["A"] == pytest.approx(4.0)
    assert main([*args, "--law", "power", "--fix", "alpha"]) == 2
    assert "clipscale: error: --fix 'alpha': expected KEY=VALUE" in capsys.readouterr().err


def test_validation_units_points_for_errors_loss_units_for_losses(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    c = np.geomspace(1e6, 1e12, 20)
    df = pd.DataFrame(
        {
            "C": c,
            "acc": 1 - 0.9 * c**-0.05 * np.exp(rng.normal(0, 0.01, 20)),
            "loss": 2.0 + 30 * c**-0.2 * np.exp(rng.normal(0, 0.01, 20)),
        }
    )
    acc = fit_table(df, law="power", C="C", y="acc", error=True, loo=True)["fits"][0]["validation"]["loo"]
    assert acc["units"] == "points" and acc["mae_pct"] == pytest.approx(100 * acc["mae"])
    lo = fit_table(df, law="saturating", C="C", y="loss", loss=True, loo=True, holdout="C > 1e11")["fits"][0][
        "validation"
    ]
    for v in lo.values():
        assert v["units"] == "loss" and "mae_pct" not in v and "errors_pct" not in v
        assert v["mae_rel_pct"] == pytest.approx(
            100 * np.mean(np.abs(v["errors"]) / df.loss.to_numpy()[-v["n"] :]), rel=0.5
        )
    assert lo["loo"]["mae"] < 0.05 and lo["loo"]["max_rel_err_pct"] < 5


def test_saved_fits_real_group_names_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = np.geomspace(1e6, 1e12, 10)
    df = pd.concat(
        [
            pd.DataFrame({"C": c, "E": 3.0 * c**-0.1, "data": "laion"}),
            pd.DataFrame({"C": c, "E": 2.0 * c**-0.1, "data": "datacomp"}),
        ]
    )
    _, results = fit_table_results(df, law="power", C="C", y="E", by="data", bootstrap=10)
    doc = saved_fit_document(results, by="data")
    assert [f["group"] for f in doc["fits"]] == ["datacomp", "laion"] and doc["by"] == "data"
    save_fits(tmp_path / "fits.json", results, by="data")
    assert load_fit(tmp_path / "fits.json", "laion").params["A"] == pytest.approx(3.0)
    assert main(["predict", str(tmp_path / "fits.json"), "--group", "datacomp", "--C", "1e6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["predicted_error"][0] == pytest.approx(
        2.0 * 1e6**-0.1
    )
    assert main(["predict", str(tmp_path / "fits.json"), "--C", "1e6"]) == 2
    assert "pick one with --group (datacomp, laion)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "fits.json"), "--group", "nope", "--C", "1e6"]) == 2
    assert "no group 'nope'; groups are: datacomp, laion" in capsys.readouterr().err
    # one group, no --group needed; numeric groups match their text
    save_fits(tmp_path / "one.json", results[:1])
    assert main(["predict", str(tmp_path / "one.json"), "--C", "1e6"]) == 0
    capsys.readouterr()
    # text unless --json: the prediction, how far beyond the fitted C, a warning past 10x
    c_max = results[0][1].input_ranges["C"][1]
    assert main(["predict", str(tmp_path / "one.json"), "--C", f"{c_max * 5:g},{c_max * 50:g}"]) == 0
    text = capsys.readouterr().out
    assert not text.lstrip().startswith("{") and "predicted error" in text
    assert "C: extrapolates 50x beyond the fitted range" in text and "warning: C is more than 10x" in text
    assert main(["predict", str(tmp_path / "one.json"), "--C", f"{c_max * 5:g}"]) == 0
    text = capsys.readouterr().out
    assert "extrapolates 5x" in text and "warning" not in text
    _, num = fit_table_results(
        df.assign(size=np.where(df.data == "laion", 4, 8)), law="power", C="C", y="E", by="size"
    )
    save_fits(tmp_path / "num.json", num, by="size")
    assert load_fit(tmp_path / "num.json", "4").params["A"] == pytest.approx(3.0)
    with pytest.raises(ClipscaleError, match="expected \\(group, FitResult"):
        saved_fit_document([("g", {"law": "power"})])


def test_predict_budget_says_how_far_the_allocation_lies_beyond_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An allocation far beyond the fitted N and D gets the factors and a warning past 10x, as a prediction
    at a given C does; one inside the data gets neither."""
    rows = []  # Hoffmann et al.'s form on isoFLOP budgets 1e18..1e21 (C = 6 N D), N from 4e6 to 5e9
    for c in np.geomspace(1e18, 1e21, 6):
        for n in np.geomspace(1 / 8, 8, 7) * 3e7 * (c / 1e18) ** (3 / 7):
            rows.append({"C": c, "N": n, "loss": 1.7 + 400 / n**0.4 + 410 / (c / (6 * n)) ** 0.3})
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    assert main(["fit", str(tmp_path / "t.csv"), "--law", "chinchilla", "--N", "N", "--D", "C / (6 * N)",
                 "--y", "loss", "--loss", "--save", str(tmp_path / "f.json")]) == 0
    fit = load_fit(tmp_path / "f.json")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "f.json"), "--budget", "1e27", "--k", "6", "--json"]) == 0
    alloc = json.loads(capsys.readouterr().out)["allocation"]
    n_over = alloc["N"] / fit.input_ranges["N"][1]
    d_over = alloc["D"] / fit.input_ranges["D"][1]
    assert n_over > 10 and d_over > 10  # N* ∝ C^(3/7): 1e6 times the largest budget is far out
    assert alloc["extrapolation"] == pytest.approx({"N": n_over, "D": d_over})
    assert len(alloc["warnings"]) == 2 and alloc["warnings"][0].startswith("N is more than 10x beyond")
    assert main(["predict", str(tmp_path / "f.json"), "--budget", "1e27", "--k", "6"]) == 0
    text = capsys.readouterr().out
    assert f"N: extrapolates {n_over:.3g}x beyond the fitted range" in text
    assert "warning: N is more than 10x" in text and "warning: D is more than 10x" in text
    assert main(["predict", str(tmp_path / "f.json"), "--budget", "1e20", "--k", "6", "--json"]) == 0
    inside = json.loads(capsys.readouterr().out)["allocation"]
    assert inside["extrapolation"] == {} and inside["warnings"] == []


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan"])
def test_predict_refuses_inputs_a_law_is_not_defined_at(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        value: str) -> None:
    c = np.geomspace(1e6, 1e12, 10)
    _, results = fit_table_results(pd.DataFrame({"C": c, "E": 3.0 * c**-0.1}), law="power", C="C", y="E")
    save_fits(tmp_path / "fit.json", results)
    assert main(["predict", str(tmp_path / "fit.json"), f"--C=1e6,{value}"]) == 2
    expected = f"input C: every value must be a finite number > 0, got {float(value):g}"
    assert capsys.readouterr().err == f"clipscale: error: {expected}\n"
    with pytest.raises(ClipscaleError, match="input C: every value"):
        results[0][1].predict(C=np.array([1e6, float(value)]))


def test_a_rising_error_without_error_flag_is_warned(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A recall fitted as if it were an error rises with C (alpha > 0): the fit says to add --error; a
    falling error or loss, and a fit with --error, say nothing."""
    c = np.geomspace(1e3, 1e6, 12)
    noise = np.exp(np.random.default_rng(0).normal(0, 0.01, c.size))
    pd.DataFrame({"C": c, "recall": 1 - 0.8 * c**-0.1 * noise,
                  "loss": 3 * c**-0.05 * noise}).to_csv(tmp_path / "t.csv", index=False)
    base = ["fit", str(tmp_path / "t.csv"), "--law", "power", "--C", "C", "--json"]
    want = "y rises with C: if y is an accuracy or recall, add --error"

    def warnings(*extra: str) -> list[str]:
        assert main([*base, *extra]) == 0
        (fit,) = json.loads(capsys.readouterr().out)["fits"]
        return fit["warnings"]

    assert any(w.startswith(want) for w in warnings("--y", "recall"))
    assert warnings("--y", "recall", "--error") == []
    assert warnings("--y", "loss", "--loss") == [] and warnings("--y", "1 - recall") == []
    assert main([*base[:-1], "--y", "recall"]) == 0
    assert f"warning: {want}" in capsys.readouterr().out
