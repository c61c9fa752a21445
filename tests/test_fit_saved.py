"""Saved fits (fits.json) are validated on read: a hand-edited file gives one line naming file and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from clipscale.fit.predict import load_fit
from clipscale.fit.result import FitResult, fit_law, saved_fit_document


def _document() -> dict[str, Any]:
    c = np.geomspace(1e2, 1e6, 10)
    y = 2 * c**-0.2 * np.exp(np.random.default_rng(0).normal(0, 0.01, c.size))
    doc = saved_fit_document([("a", fit_law("power", y=y, C=c, bootstrap=20))])
    doc["left_out"] = {"max_passes": 10, "runs": 0, "of": 10, "run_ids": []}  # a study's keys pass
    doc["fits"][0]["extrapolation_check"] = None
    doc["fits"][0]["extrapolation_check_reason"] = "too few runs"
    return json.loads(json.dumps(doc))


def _edit(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set doc[k1][k2]... (keys separated by '/'; integers index lists); `...` deletes the key."""
    *head, last = [int(k) if k.isdigit() else k for k in path.split("/")]
    node = doc
    for k in head:
        node = node[k]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


CASES = [
    ("fits", {}, "fits: expected a non-empty list of fits"),
    ("fits/0/bootstrap_params/3", [1.0], "fits[0]: bootstrap_params[3]: expected a row of 2 numbers"),
    ("fits/0/ci/alpha", [-0.2], "fits[0]: ci.alpha: expected a [low, high] pair"),
    ("fits/0/params/alpha", float("nan"), "fits[0]: params.alpha: expected a finite number, got nan"),
    ("fits/0/params/A", ..., "fits[0]: params: missing parameter 'A'"),
    ("fits/0/law", ..., "fits[0]: missing key 'law'"),
    ("fits/0/law", "nope", "fits[0]: law: unknown law 'nope'"),
    ("fits/0/input_ranges/C", [5, "x"], "fits[0]: input_ranges.C: expected a finite number"),
    ("fits/0/link", {"lambda": None}, "fits[0]: link.lambda: expected a finite number"),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_saved_fit_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: Any, message: str
) -> None:
    path = tmp_path / "fits.json"
    path.write_text(json.dumps(_edit(_document(), key, value)))  # json writes NaN as the token NaN
    with pytest.raises(ClipscaleError) as exc:
        load_fit(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)
    for argv in (["predict", str(path), "--C", "1e7"], ["compare", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(path) in err


def test_good_saved_fit_with_study_keys_loads_and_predicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fits.json"
    path.write_text(json.dumps(_document()))
    fit = load_fit(path)
    assert fit.params["alpha"] == pytest.approx(-0.2, abs=0.02) and len(fit.bootstrap_params) == 20
    assert main(["predict", str(path), "--C", "1e7"]) == 0
    assert "95% CI" in capsys.readouterr().out


def test_from_dict_checks_before_building() -> None:
    entry = _document()["fits"][0]
    entry["params"]["alpha"] = float("inf")
    with pytest.raises(ClipscaleError, match=r"^my fit: params.alpha: expected a finite number"):
        FitResult.from_dict(entry, "my fit")


def test_report_checks_the_fits_it_reads(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from clipscale.report.build import read_fits

    study = SimpleNamespace(output_dir=tmp_path, path=tmp_path / "study.toml")
    doc = _document()
    (tmp_path / "fits.json").write_text(json.dumps(doc))
    assert read_fits(study)["fits"][0]["law"] == "power"
    (tmp_path / "fits.json").write_text(json.dumps({**doc, "fits": []}))  # a study whose every fit failed
    assert read_fits(study)["fits"] == []
    (tmp_path / "fits.json").write_text(json.dumps(_edit(doc, "fits/0/bootstrap_params/0", [1.0, 2.0, 3.0])))
    with pytest.raises(ClipscaleError, match=r"fits.json: fits\[0\]: bootstrap_params\[0\]: expected a row"):
        read_fits(study)
