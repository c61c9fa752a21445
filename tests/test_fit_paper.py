"""Regression against published numbers: Cherti et al. 2023 tables and Besiroglu et al. 2024 (Epoch).

Frontier/power numbers are what the issue's exact method gives on ../shared/paper, to 3 significant
digits. Joint-law figures are the issue's targets (LOO <= 0.8 points, H/14 + g/14 extrapolation <= 0.3
points) and the measured values, also on flickr30k, which the law was not designed on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.fit import fit_law

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAPER = SHARED / "paper"
EPOCH = SHARED / "external" / "chinchilla_svg_extracted.csv"
pytestmark = pytest.mark.skipif(not PAPER.is_dir(), reason="../shared not present")


@pytest.fixture(scope="session")
def reproduction() -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "reproduce",
                "cherti2023",
                "--data",
                str(PAPER),
                "--json",
            ]
        )
    assert rc == 0
    return json.loads(buf.getvalue())


def test_reproduce_json_has_exactly_the_issue_keys(reproduction: dict) -> None:
    assert list(reproduction) == ["fits", "predictions", "prediction_mae_pct", "joint"]
    assert set(reproduction["fits"][0]) == {"target", "source", "law", "A", "alpha", "n"}
    assert set(reproduction["predictions"][0]) == {
        "target",
        "arch",
        "samples_seen",
        "predicted_pct",
        "actual_pct",
    }
    assert set(reproduction["joint"][0]) == {
        "target",
        "loo_mae_pct",
        "holdout_mae_pct",
        "frontier_loo_mae_pct",
        "frontier_holdout_mae_pct",
    }
    assert len(reproduction["predictions"]) == 2 * 6 * 5  # prediction table: imagenet1k, mscoco only


@pytest.mark.parametrize(
    ("target", "source", "law", "A", "alpha", "n"),
    [
        ("imagenet1k", "openclip", "frontier", 5.86, -0.111, 29),
        ("imagenet1k", "openai", "power", 23.2, -0.164, 3),
        ("mscoco_captions", "openclip", "frontier", 2.75, -0.0794, 29),
        ("mscoco_captions", "openai", "power", 1.59, -0.0508, 3),
        ("flickr30k", "openclip", "frontier", 15.5, -0.189, 29),
        ("flickr30k", "openai", "power", 2.21, -0.103, 3),
    ],
)
def test_figure1_fits(
    reproduction: dict, target: str, source: str, law: str, A: float, alpha: float, n: int
) -> None:
    (fit,) = [f for f in reproduction["fits"] if f["target"] == target and f["source"] == source]
    assert fit["law"] == law and fit["n"] == n
    assert fit["A"] == pytest.approx(A, rel=5e-3)
    assert fit["alpha"] == pytest.approx(alpha, rel=5e-3)


def test_prediction_table(reproduction: dict) -> None:
    rows = {(p["target"], p["arch"], p["samples_seen"]): p for p in reproduction["predictions"]}
    g14_68b = rows[("imagenet1k", "ViT-G-14", 2 * 407_332_084 * 84)]
    assert g14_68b["predicted_pct"] == pytest.approx(81.9, abs=0.05) and g14_68b["actual_pct"] is None
    h14 = rows[("imagenet1k", "ViT-H-14", 407_332_084 * 84)]
    assert h14["predicted_pct"] == pytest.approx(78.1, abs=0.05)
    assert h14["actual_pct"] == pytest.approx(77.97, abs=0.01)
    assert sum(p["actual_pct"] is not None for p in reproduction["predictions"]) == 2 * 11
    assert reproduction["prediction_mae_pct"]["imagenet1k"] == pytest.approx(0.874, abs=5e-3)
    assert reproduction["prediction_mae_pct"]["mscoco_captions"] == pytest.approx(0.588, abs=5e-3)


def test_joint_law_meets_the_issue_targets(reproduction: dict) -> None:
    j = {r["target"]: r for r in reproduction["joint"]}
    for t in ("imagenet1k", "mscoco_captions"):
        # Data-constrained runs: the frontier law (compute only) is off by 3.6-3.7 points, joint < 0.8.
        assert j[t]["loo_mae_pct"] <= 0.8
        assert j[t]["loo_mae_pct"] < j[t]["frontier_loo_mae_pct"] / 4.5
        assert j[t]["holdout_mae_pct"] <= 0.3  # fitted up to L/14, predicts H/14 and g/14
    # Measured values (2 %), so a change to the estimator that moves them shows up here.
    assert j["imagenet1k"]["loo_mae_pct"] == pytest.approx(0.793, rel=0.02)
    assert j["mscoco_captions"]["loo_mae_pct"] == pytest.approx(0.720, rel=0.02)
    assert j["imagenet1k"]["holdout_mae_pct"] == pytest.approx(0.258, rel=0.02)
    assert j["mscoco_captions"]["holdout_mae_pct"] == pytest.approx(0.142, rel=0.02)
    assert j["imagenet1k"]["frontier_loo_mae_pct"] == pytest.approx(3.746, rel=0.02)
    assert j["imagenet1k"]["frontier_holdout_mae_pct"] == pytest.approx(0.0955, rel=0.02)


def test_joint_law_holds_on_a_target_it_was_not_designed_on(reproduction: dict) -> None:
    (j,) = [r for r in reproduction["joint"] if r["target"] == "flickr30k"]  # default targets include it
    assert j["loo_mae_pct"] == pytest.approx(0.825, rel=0.02)
    assert j["holdout_mae_pct"] == pytest.approx(0.160, rel=0.02)
    assert j["holdout_mae_pct"] <= 0.3
    assert j["loo_mae_pct"] < j["frontier_loo_mae_pct"] / 3


def test_joint_law_with_link_auto_meets_the_aim_on_aggregate_targets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 12's aim (LOO <= 1.0, H/14+g/14 <= 0.5 points) on aggregates nobody tuned the law on, with the
    link `--link auto` chooses inside every fold; fitted to E (the default), imagenet_robustness misses it
    (1.07 / 1.13)."""
    from clipscale.fit.reproduction.paper import load_paper, target_rows
    from clipscale.fit.reproduction.reproduce import joint_checks

    args = ["reproduce", "cherti2023", "--data", str(PAPER), "--targets", "imagenet_robustness,vtab+"]
    assert main([*args, "--link", "auto", "--json"]) == 0
    j = {r["target"]: r for r in json.loads(capsys.readouterr().out)["joint"]}
    for target, loo, holdout in (("imagenet_robustness", 0.825, 0.411), ("vtab+", 0.805, 0.107)):
        assert j[target]["loo_mae_pct"] <= 1.0 and j[target]["holdout_mae_pct"] <= 0.5
        assert j[target]["loo_mae_pct"] == pytest.approx(loo, rel=0.02)
        assert j[target]["holdout_mae_pct"] == pytest.approx(holdout, rel=0.02)
    on_e = joint_checks(target_rows(load_paper(PAPER)[0], "imagenet_robustness"), "imagenet_robustness")
    assert on_e["loo_mae_pct"] > 1.0 and on_e["holdout_mae_pct"] > 1.0


def test_a_joint_fit_from_scratch_reaches_the_optimum_a_warm_start_reaches() -> None:
    """vtab's 27 runs up to L/14 have their best optimum where the size-and-samples term is a tiny, steep
    correction (beta ~ 1.6, gamma ~ 0.02), a region the main grid of starts never reaches; the law's extra
    grid does, so a user's fit of those runs is the one the holdout check reports."""
    from clipscale.fit.estimation.estimate import fit_prepared
    from clipscale.fit.estimation.points import prepare
    from clipscale.fit.estimation.validate import _starts
    from clipscale.fit.laws import get_law
    from clipscale.fit.reproduction.paper import HOLDOUT_ARCHS, joint_inputs, load_paper, target_rows

    rows = target_rows(load_paper(PAPER)[0], "vtab")
    ours = rows[rows.source == "openclip"].reset_index(drop=True)
    held = ours.arch.isin(HOLDOUT_ARCHS).to_numpy()
    prep = prepare(get_law("joint"), ours.E.to_numpy(), joint_inputs(ours))
    train = prep.subset(~held)
    warm = fit_prepared(train, delta=1e-3, starts=_starts(train, fit_prepared(prep, delta=1e-3), 1e-3))
    cold = fit_law("joint", y=ours.E[~held].to_numpy(), huber_delta=1e-3, **joint_inputs(ours[~held]))
    assert cold.objective == pytest.approx(warm.objective, rel=1e-6)
    assert cold.params["beta"] > 1.0 and cold.params["gamma"] < 0.1


def test_reproduce_out_writes_figures_and_every_table(tmp_path) -> None:
    out = tmp_path / "cherti"
    args = ["reproduce", "cherti2023", "--data", str(PAPER), "--out", str(out), "--targets", "imagenet1k"]
    assert main([*args, "--bootstrap", "20"]) == 0
    for name in ("imagenet1k_fig1", "imagenet1k_joint"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    params = pd.read_csv(out / "joint_params.csv")
    assert list(params.columns) == ["target", "A", "alpha", "beta", "G", "kappa", "rho", "gamma"]
    assert len(pd.read_csv(out / "predictions.csv")) == 6 * 5
    assert set(pd.read_csv(out / "fits.csv").source) == {"openclip", "openai"}
    assert pd.read_csv(out / "joint.csv").loc[0, "loo_mae_pct"] <= 0.8
    assert (out / "prediction_mae.csv").is_file()
    assert pd.read_csv(out / "joint_links.csv").to_dict("records") == [
        {"target": "imagenet1k", "link": "error"}
    ]


@pytest.mark.skipif(not EPOCH.is_file(), reason="Epoch data not present")
def test_chinchilla_on_epoch_data_reproduces_besiroglu() -> None:
    df = pd.read_csv(EPOCH)
    df = df[df["loss"] < 3.44]
    assert len(df) == 240
    n = df["Model Size"].to_numpy()
    fit = fit_law(
        "chinchilla", y=df["loss"].to_numpy(), N=n, D=df["Training FLOP"].to_numpy() / (6 * n), loss=True
    )
    # Besiroglu et al. 2024 (arXiv 2404.10102): E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658.
    assert fit.params["E_inf"] == pytest.approx(1.8172, rel=0.005)
    assert fit.params["alpha"] == pytest.approx(0.3478, rel=0.02)
    assert fit.params["beta"] == pytest.approx(0.3658, rel=0.02)
    assert fit.params["A"] == pytest.approx(482.01, rel=0.03)
    assert fit.params["B"] == pytest.approx(2085.43, rel=0.05)
    assert fit.n_starts_at_best >= 16
