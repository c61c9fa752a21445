"""Progress on stderr for logs that are not a terminal: a line per study run start, per reproduce target."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from tests.test_readme import SHARED

STUDY = """
[study]
name = "p"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 1000

[[grid]]
model = ["tiny-S0", "tiny-S1"]
dataset = "uni"
data_size = 1000
samples_seen = 400
"""


def test_run_prints_a_line_per_run_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clipscale.study.grid import plan
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study
    from tests.study_fakes import FAKE_HOOKS, fake_flops

    (tmp_path / "s.toml").write_text(STUDY)
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        study = load_study(tmp_path / "s.toml")
        run_study(study, hooks=FAKE_HOOKS, jobs=1, log=lambda s: None)
        runs = plan(study)
    assert {r.samples_seen for r in runs} == {512}  # 400 is planned as 4 whole batches of 128 (issue 20)
    starts = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("start ")]
    # the line names what the run trains (the planned samples, as status and summary.json do)
    assert sorted(starts) == sorted(f"start {r.run_id} ({r.model}, uni, 512 samples)" for r in runs), starts
    assert {ln.split()[2] for ln in starts} == {"(tiny-S0,", "(tiny-S1,"}


def test_reproduce_prints_a_line_per_target(capsys: pytest.CaptureFixture[str]) -> None:
    if SHARED is None:
        pytest.skip("../shared (the paper's published tables) is not on this machine")
    from clipscale.cli import main

    assert main(["reproduce", "cherti2023", "--data", str(SHARED / "paper"), "--targets",
                 "imagenet1k,mscoco_captions"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [ln.split(":")[1] for ln in err if ln.startswith("reproduce: target")] == [
        " target 1/2 imagenet1k", " target 2/2 mscoco_captions"]
