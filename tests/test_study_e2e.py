"""A real (tiny) study end to end: synthetic data, training, evaluation, results table, status, fits,
report, and `clipscale predict` on the study's fits.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipscale.cli import main
from clipscale.study.grid import plan
from clipscale.study.results import build_results_table
from clipscale.study.spec import load_study
from clipscale.study.state import read_state

STUDY = """
[study]
name = "e2e"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 600

[train]
batch_size = 64
checkpoint_points = [0.5, 1.0]
workers = 0
threads = 1

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = [300, 600]
samples_seen = 256

[[grid]]  # a second compute, so a law of C can be fitted
model = "tiny-S0"
dataset = "uni"
data_size = 600
samples_seen = 128

[eval]
suite = "synth"
samples_per_task = 40
batch_size = 64
"""


@pytest.mark.slow
def test_real_study_end_to_end(tmp_path: Path, capsys) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "3 runs, total compute" in capsys.readouterr().out
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    study = load_study(path)
    runs = plan(study)
    assert all(read_state(r.run_dir)["state"] == "finished" for r in runs)
    df = build_results_table(study)
    assert set(df.run_id) == {r.run_id for r in runs}
    assert set(df.samples_seen) == {64, 128, 256} and set(df.data_size) == {300, 600}
    retrieval = df[df.task == "zeroshot_retrieval"]
    assert len(retrieval) == 6 and retrieval["image_retrieval_recall@5"].between(0, 1).all()
    assert (df.compute > 0).all() and (df.gmacs == runs[0].gmacs).all()
    # the run ended with results -> fits -> report, and the saved fit answers `clipscale predict`
    for name in ("results.csv", "fits.json", "report.html"):
        assert (study.output_dir / name).exists() and str(study.output_dir / name) in out
    fits = study.output_dir / "fits.json"
    assert main(["predict", str(fits), "--group", "uniform/frontier", "--C", "1e3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["predicted_error"][0] > 0
    assert main(["status", str(path)]) == 0
    assert "3 runs: 3 finished" in capsys.readouterr().out
    assert main(["results", str(path), "--format", "parquet"]) == 0
    assert (study.output_dir / "results.parquet").exists()
    assert main(["run", str(path)]) == 0  # nothing left to do
    assert "all 3 runs were already finished; none ran now" in capsys.readouterr().out


@pytest.mark.slow
def test_run_under_torchrun_with_two_ranks(tmp_path: Path) -> None:
    """`[executor] gpus_per_run = 2`: the run trains as 2 torchrun ranks (gloo on CPU), then is evaluated."""
    text = STUDY.replace("data_size = [300, 600]", "data_size = 600")
    text = text.replace("samples_seen = 128", "samples_seen = 256")  # the two blocks' one run
    path = tmp_path / "study.toml"
    path.write_text(text + "\n[executor]\ngpus_per_run = 2\n")
    assert main(["run", str(path), "--no-report"]) == 0
    study = load_study(path)
    (run,) = plan(study)
    assert json.loads((run.run_dir / "summary.json").read_text())["world_size"] == 2
    assert (run.run_dir / "train_config.toml").exists() and read_state(run.run_dir)["state"] == "finished"
    assert len(build_results_table(study)) == 10  # 2 checkpoints x 5 synthetic tasks
