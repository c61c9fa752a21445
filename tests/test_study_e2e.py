"""A real (tiny) study end to end: synthetic data, training, evaluation, results table, status, report."""

from __future__ import annotations

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
    assert "2 runs, total compute" in capsys.readouterr().out
    assert main(["run", str(path)]) == 0
    study = load_study(path)
    runs = plan(study)
    assert all(read_state(r.run_dir)["state"] == "finished" for r in runs)
    df = build_results_table(study)
    assert set(df.run_id) == {r.run_id for r in runs}
    assert set(df.samples_seen) == {128, 256} and set(df.data_size) == {300, 600}
    retrieval = df[df.task == "zeroshot_retrieval"]
    assert len(retrieval) == 4 and retrieval["image_retrieval_recall@5"].between(0, 1).all()
    assert (df.compute > 0).all() and (df.gmacs == runs[0].gmacs).all()
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    assert "2 runs: 2 finished" in capsys.readouterr().out
    assert main(["results", str(path), "--format", "parquet"]) == 0
    assert (study.output_dir / "results.parquet").exists()
    assert main(["run", str(path)]) == 0  # nothing left to do
    assert "0 finished, 0 failed, 0 skipped, 0 locked" in capsys.readouterr().out


@pytest.mark.slow
def test_run_under_torchrun_with_two_ranks(tmp_path: Path) -> None:
    """`[executor] gpus_per_run = 2`: the run trains as 2 torchrun ranks (gloo on CPU), then is evaluated."""
    import json

    text = STUDY.replace('data_size = [300, 600]', 'data_size = 600') + "\n[executor]\ngpus_per_run = 2\n"
    path = tmp_path / "study.toml"
    path.write_text(text)
    assert main(["run", str(path)]) == 0
    study = load_study(path)
    (run,) = plan(study)
    assert json.loads((run.run_dir / "summary.json").read_text())["world_size"] == 2
    assert (run.run_dir / "train_config.toml").exists() and read_state(run.run_dir)["state"] == "finished"
    assert len(build_results_table(study)) == 10  # 2 checkpoints x 5 synthetic tasks
