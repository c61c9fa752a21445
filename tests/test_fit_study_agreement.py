"""`clipscale fit`, `isoflop` and `compare` on a study's results.csv, with the study's settings, give what the
study itself wrote to fits.json: the README's "exactly the study's" promise for the verbs of step 3.

The demo-shaped study (tests/test_readme.py's fixture: the demo's grid and layout, fake metrics) has two
600-sample runs at 51 passes that its `[fit] max_passes = 10` leaves out; `--max-passes 10` must leave
out the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipscale.cli import main
from tests.test_readme import demo_shaped_study  # noqa: F401  (the module-scoped fixture)

TABLE = "clipscale-demo/results.csv"
TARGET = ["--y", "image_retrieval_recall@5", "--error", "--where", "dataset == 'synth_retrieval' and final"]


def _study(root: Path) -> dict:
    return json.loads((root / "clipscale-demo" / "fits.json").read_text(encoding="utf-8"))


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _isoflop(study: dict, distribution: str) -> dict:
    return next(e for e in study["isoflop"] if e["metric"] == "image_retrieval_recall@5"
                and e["distribution"] == distribution)


def test_isoflop_max_passes_gives_the_studys_budgets(demo_shaped_study: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(demo_shaped_study)
    study = _study(demo_shaped_study)
    base = ["isoflop", TABLE, "--C", "compute", "--N", "params_nonemb", *TARGET, "--by", "distribution"]
    everything = _json(base, capsys)  # the 51-pass runs make budgets of their own (uniform's)
    assert any(len(g["budgets"]) > len(_isoflop(study, g["group"])["budgets"]) for g in everything["groups"])
    doc = _json([*base, "--max-passes", "10"], capsys)
    assert doc["passes"]["left_out_rows"] == 2 and doc["passes"]["max_passes"] == 10
    for g in doc["groups"]:
        theirs = _isoflop(study, g["group"])
        assert len(g["budgets"]) == len(theirs["budgets"]) and g["n_budgets_used"] == theirs["n_budgets_used"]
        for mine, want in zip(g["budgets"], theirs["budgets"], strict=True):
            # the study's C is the planned budget, ours the runs' measured compute: the same within the
            # budget clustering's gap (0.05 dex); the runs, hence each parabola, are the same
            assert abs(mine["C"] / want["C"] - 1) < 10**0.05 - 1
            assert (mine["N_opt"], mine["y_opt"], mine["edge"]) == pytest.approx(
                (want["N_opt"], want["y_opt"], want["edge"]), rel=1e-9)
    assert main([*base, "--max-passes", "10"]) == 0  # the text says how many rows were left out
    assert "--max-passes 10: left out 2 of 26 rows" in capsys.readouterr().out


def test_compare_max_passes_gives_the_studys_comparison(demo_shaped_study: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(demo_shaped_study)
    study = _study(demo_shaped_study)
    theirs = next(c for c in study["comparisons"] if c["metric"] == "image_retrieval_recall@5")
    base = ["compare", TABLE, "--by", "distribution", "--law", "frontier", "--C", "compute", *TARGET,
            "--bootstrap", str(study["settings"]["bootstrap"]), "--seed", "0"]
    doc = _json([*base, "--max-passes", "10"], capsys)
    assert doc["passes"]["left_out_rows"] == 2
    (pair,) = doc["pairs"]
    assert pair["groups"] == theirs["groups"]
    for mine, want in zip(pair["at"], theirs["at"], strict=True):
        assert mine["C"] == pytest.approx(want["C"], rel=1e-12)
        assert mine["difference"] == pytest.approx(want["difference"], abs=1e-12)
        assert mine["ci"] == pytest.approx(want["ci"], rel=1e-9, abs=1e-12)
    everything = _json(base, capsys)  # with the 51-pass runs the largest C measured is theirs
    assert everything["at"][0] > doc["at"][0] * 1.1
    assert main([*base, "--max-passes", "10"]) == 0
    assert "--max-passes 10: left out 2 of 26 rows" in capsys.readouterr().out
    assert main(["compare", "clipscale-demo/fits.json", "--max-passes", "10"]) == 2
    assert "--max-passes" in capsys.readouterr().err  # a saved document has no rows to leave out


def test_fit_with_the_studys_bootstrap_gives_the_studys_ci(demo_shaped_study: Path,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Bootstrap resamples number runs by content: the same count, seed and rows give the study's CIs."""
    monkeypatch.chdir(demo_shaped_study)
    study = _study(demo_shaped_study)
    doc = _json(["fit", TABLE, "--law", "frontier", "--C", "compute", *TARGET, "--max-passes", "10",
                 "--by", "distribution", "--bootstrap", str(study["settings"]["bootstrap"])], capsys)
    for f in doc["fits"]:
        want = next(e for e in study["fits"] if e["metric"] == "image_retrieval_recall@5"
                    and e["law"] == "frontier" and e["distribution"] == f["group"])
        for key, ci in want["ci"].items():
            assert f["ci"][key] == pytest.approx(ci, rel=1e-9), (f["group"], key)
