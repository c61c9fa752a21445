"""Study-level checks of issue 18: eval data_root against the study file, shard data sizes, max_passes,
suite aggregates in the results table, and the extrapolation check of the largest compute group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipscale.errors import ClipscaleError
from clipscale.study.spec import load_study

STUDY = """
[study]
name = "t"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 4000
samples_seen = 2000
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_eval_data_root_is_relative_to_the_study_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", STUDY + '[eval]\nsuite = "synth"\ndata_root = "evaldata"\n')
    monkeypatch.chdir(tmp_path)
    assert load_study(path).eval_root() == tmp_path / "sub" / "evaldata"
    absolute = _write(tmp_path, STUDY + f'[eval]\ndata_root = "{tmp_path / "abs"}"\n')
    assert load_study(absolute).eval_root() == tmp_path / "abs"


def test_eval_data_root_of_the_wrong_type_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ClipscaleError) as err:
        load_study(_write(tmp_path, STUDY + "[eval]\ndata_root = 5\n"))
    assert str(err.value).startswith(str(tmp_path / "study.toml")) and "[eval] data_root" in str(err.value)
    assert "\n" not in str(err.value) and os.sep in str(err.value)
