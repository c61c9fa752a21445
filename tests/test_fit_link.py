"""`--link`: the scale a law of an error is fitted on, and `auto`'s choice by forward validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.fit import fit_law, fit_table
from clipscale.fit.estimation.link import IDENTITY, inverse, parse_link, transform
from clipscale.fit.laws import get_law

JOINT = {"A": 3.7, "alpha": 0.13, "beta": 0.09, "G": 3e9, "kappa": 0.12, "rho": 0.15, "gamma": 1.4}
SIZES = [7.4, 20.6, 87.7, 191.0]


def _grid(sizes: list[float] = SIZES) -> dict[str, np.ndarray]:
    n, u, s = np.meshgrid(sizes, [8e7, 4e8, 2e9], [3e9, 1.3e10, 3.4e10], indexing="ij")
    return {"N": n.ravel(), "U": u.ravel(), "S": s.ravel()}


def _neglog_errors(x: dict[str, np.ndarray]) -> np.ndarray:
    """Errors whose -log(accuracy) is the joint law: accuracy exp(-J) accelerates with scale."""
    return -np.expm1(-get_law("joint").predict(JOINT, x))


def test_box_cox_family_endpoints_and_round_trip() -> None:
    e = np.array([0.01, 0.2, 0.5, 0.9, 0.999])
    np.testing.assert_array_equal(transform(e, IDENTITY), e)
    np.testing.assert_allclose(transform(e, 0.0), -np.log(1 - e))
    np.testing.assert_allclose(transform(e, 1.0), e / (1 - e))
    for lam in (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, -2.0):
        np.testing.assert_allclose(inverse(transform(e, lam), lam), e, rtol=1e-10)
    # beyond the range of g (lam < 0 is bounded by -1/lam) the error is 1, not NaN
    assert inverse(np.array([3.0]), -0.5)[0] == 1.0


def test_parse_link_names_and_bad_spec() -> None:
    assert parse_link("auto") is None and parse_link(None) is None
    assert (parse_link("error"), parse_link("neglog"), parse_link("odds")) == (-1.0, 0.0, 1.0)
    assert parse_link("boxcox:-0.5") == -0.5 and parse_link(0.25) == 0.25
    for bad in ("boxcox:x", "logit", "boxcox:9", True):
        with pytest.raises(ClipscaleError, match="--link"):
            parse_link(bad)


def test_auto_link_recovers_a_law_of_neg_log_accuracy_and_extrapolates() -> None:
    x = _grid()
    fit = fit_law("joint", y=_neglog_errors(x), link="auto", **x)
    assert fit.link == 0.0 and fit.link_choice["by"] == "auto"
    assert fit.link_choice["predicted_N"] == [87.7, 191.0]  # rolling origin: from the third size up
    assert min(fit.link_choice["scores_pct"].values()) == fit.link_choice["scores_pct"]["0"] < 1e-3
    for k, v in JOINT.items():
        assert fit.params[k] == pytest.approx(v, rel=2e-2), k
    big = {"N": np.array([532.9]), "U": np.array([2e9]), "S": np.array([6.8e10])}
    truth = _neglog_errors(big)[0]
    assert fit.predict(**big)[0] == pytest.approx(truth, abs=1e-4)
    # The same law fitted to E itself (the default) misses the larger model by much more.
    on_e = fit_law("joint", y=_neglog_errors(x), **x)
    assert on_e.link == IDENTITY and on_e.link_choice["by"] == "given"
    assert abs(on_e.predict(**big)[0] - truth) > 10 * abs(fit.predict(**big)[0] - truth)


def test_auto_link_keeps_the_error_when_the_error_is_the_power_law() -> None:
    x = _grid()
    y = get_law("joint").predict(JOINT, x)
    fit = fit_law("joint", y=y, link="auto", **x)
    assert fit.link == IDENTITY
    assert fit.link_choice["scores_pct"]["-1"] == min(fit.link_choice["scores_pct"].values())


def test_auto_link_falls_back_to_the_error_where_it_cannot_validate() -> None:
    c = np.geomspace(1e9, 1e13, 12)
    power = fit_law("power", y=3.0 * c**-0.12, C=c, link="auto")
    assert power.link == IDENTITY and "no model size N" in power.link_choice["reason"]
    two = _grid(SIZES[:2])
    chin = fit_law("chinchilla", y=_neglog_errors(two), N=two["N"], D=two["S"], link="auto")
    assert chin.link == IDENTITY and "fewer than 3 model sizes" in chin.link_choice["reason"]
    x = _grid()
    loss = fit_law("joint", y=2.0 + get_law("joint").predict(JOINT, x), loss=True, link="auto", **x)
    assert loss.link == IDENTITY and "loss" in loss.link_choice["reason"]


def test_links_that_cannot_apply_are_one_line_errors() -> None:
    x = _grid()
    y = _neglog_errors(x)
    y[0] = 1.0  # a run at accuracy 0: -log(accuracy) and the odds are infinite there
    with pytest.raises(ClipscaleError, match=r"--link odds needs accuracies > 0 \(1 points"):
        fit_law("joint", y=y, link="odds", **x)
    assert fit_law("joint", y=y, link="auto", **x).link < 0  # auto only tries the links that are finite
    with pytest.raises(ClipscaleError, match="not for a --loss"):
        fit_law("joint", y=2.0 + y, loss=True, link="neglog", **x)


def test_cli_link_is_reported_saved_and_used_by_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = _grid()
    df = pd.DataFrame({**x, "acc": 1 - _neglog_errors(x)})
    df.to_csv(tmp_path / "t.csv", index=False)
    args = ["fit", str(tmp_path / "t.csv"), "--law", "joint", "--y", "acc", "--error", "--N", "N"]
    args += ["--U", "U", "--S", "S", "--link", "auto", "--save", str(tmp_path / "f.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "link: neglog (lambda 0; auto: forward MAE in points when predicting N = 87.7, 191:" in out
    saved = json.loads((tmp_path / "f.json").read_text())["fits"][0]
    assert saved["link"]["lambda"] == 0.0 and saved["link"]["by"] == "auto"
    at = ["--N", "532.9", "--U", "2e9", "--S", "6.8e10", "--json"]
    assert main(["predict", str(tmp_path / "f.json"), *at]) == 0
    pred = json.loads(capsys.readouterr().out)["prediction"]
    truth = _neglog_errors({"N": np.array([532.9]), "U": np.array([2e9]), "S": np.array([6.8e10])})[0]
    assert pred["predicted_error"][0] == pytest.approx(truth, abs=1e-4)
    assert main([*args[:-2], "--link", "boxcox:x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--link 'boxcox:x'" in err


def test_validation_chooses_the_link_on_each_folds_training_rows() -> None:
    x = _grid()
    df = pd.DataFrame({**x, "E": _neglog_errors(x)})
    doc = fit_table(df, law="joint", y="E", N="N", U="U", S="S", holdout="N > 100", loo=True, link="auto")
    val = doc["fits"][0]["validation"]
    # The held-out size is not among the sizes the link was chosen on.
    assert val["holdout"]["link"]["predicted_N"] == [87.7] and val["holdout"]["link"]["lambda"] == 0.0
    assert sum(val["loo"]["links"].values()) == len(df)
    assert val["holdout"]["mae_pct"] < 1e-3 and val["loo"]["mae_pct"] < 1e-3
    given = fit_table(df, law="joint", y="E", N="N", U="U", S="S", holdout="N > 100")  # default: E
    assert given["fits"][0]["validation"]["holdout"]["mae_pct"] > 2 * val["holdout"]["mae_pct"]


def test_report_says_which_scale_a_law_is_of() -> None:
    from clipscale.report.analysis import describe_fit
    from clipscale.report.html import fits_table

    x = _grid()
    meta = {"dataset": "synth", "metric": "acc1", "distribution": "uniform", "group": "uniform"}
    on_log = {**fit_law("joint", y=_neglog_errors(x), link="neglog", **x).to_dict(), **meta}
    on_e = {**fit_law("joint", y=_neglog_errors(x), **x).to_dict(), **meta}
    assert ", law of -log(accuracy) (link neglog, given):" in describe_fit(on_log)
    assert "law of" not in describe_fit(on_e)
    assert "law of -log(accuracy)" in fits_table([on_log]) and "law of" not in fits_table([on_e])


def test_groups_on_different_scales_are_not_compared(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    x = _grid()
    e_law = get_law("joint").predict(JOINT, x)
    df = pd.concat(
        [pd.DataFrame({**x, "E": _neglog_errors(x), "g": "log"}), pd.DataFrame({**x, "E": e_law, "g": "e"})]
    )
    doc = fit_table(df, law="joint", y="E", N="N", U="U", S="S", by="g", bootstrap=5, link="auto")
    assert {f["group"]: f["link"]["name"] for f in doc["fits"]} == {"e": "error", "log": "neglog"}
    assert doc["differences"] == []  # alpha of E and alpha of -log(accuracy) are different quantities
    df.to_csv(tmp_path / "t.csv", index=False)
    args = ["fit", str(tmp_path / "t.csv"), "--law", "joint", "--y", "E", "--N", "N", "--U", "U", "--S", "S"]
    assert main([*args, "--by", "g", "--link", "auto"]) == 0
    assert "note: the groups' laws are of different scales (e: error, log: neglog)" in capsys.readouterr().out
