"""The SLURM path through submitit's LocalExecutor: the same job objects a cluster runs, requeue included."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from clipscale.io import read_jsonl
from clipscale.study.grid import plan
from clipscale.study.hooks import torchrun_command
from clipscale.study.runner import RunTask, execute_run, prepare_dataset, prepare_eval, run_study
from clipscale.study.slurm import SlurmExecutor, _slurm_parameters
from clipscale.study.spec import load_study
from clipscale.study.state import read_state
from tests.study_fakes import FAKE_HOOKS, fake_flops

STUDY = """
[study]
name = "s"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[train]
lr = 1e-3  # explicit: no ladder lookup, so job processes never import torch (keeps these tests fast)
batch_size = 100
checkpoint_points = [0.25, 0.5, 0.75, 1.0]

[[grid]]
model = ["tiny-S0", "tiny-S1"]
dataset = "uni"
data_size = 4000
samples_seen = [2000]

[slurm]
partition = "gpu"
nodes = 1
gpus_per_node = 0
time_min = 30
account = "proj"
"""


@pytest.fixture
def study(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))  # job processes import tests.*
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        yield load_study(path)


def test_slurm_parameters_come_from_the_study_file(study) -> None:
    params = _slurm_parameters(study)
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "proj"
    assert params["timeout_min"] == 30 and params["nodes"] == 1 and params["tasks_per_node"] == 1
    cmd = torchrun_command(Path("c.toml"), nproc=8, nnodes=2, node_rank=1, master="node0")
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nnodes=2" in cmd and "--node_rank=1" in cmd
    assert cmd[-4:] == ["-m", "clipscale.cli", "train", "c.toml"]


def test_study_runs_as_submitit_jobs(study) -> None:
    result = run_study(study, executor="slurm", slurm_backend="local", hooks=FAKE_HOOKS, log=lambda s: None)
    assert result["finished"] == 2
    for run in plan(study):
        assert read_state(run.run_dir)["state"] == "finished"
        pids = {r["pid"] for r in read_jsonl(run.run_dir / "fake_calls.jsonl")}
        assert os.getpid() not in pids  # trained inside the job process
    assert list((study.output_dir / "slurm").glob("*/*_submitted.pkl"))


def test_timed_out_job_is_requeued_and_resumes(study, monkeypatch) -> None:
    """SLURM signals a job before its time limit; submitit checkpoints (requeues) it; the run resumes."""
    monkeypatch.setenv("FAKE_SLOW_FIRST_ATTEMPT", "1")  # attempt 1: 20 steps x 1 s; later attempts: instant
    run = plan(study)[0]
    task = RunTask(plan=run, train_data=prepare_dataset(study.datasets["uni"], study.data_dir, FAKE_HOOKS),
                   eval_suite="synth", eval_root=prepare_eval(study, FAKE_HOOKS), eval_batch_size=8,
                   hooks=FAKE_HOOKS)
    executor = SlurmExecutor(study, backend="local")
    # the time-limit signal (USR2) comes 14 s after the start, well after the job installed its handler;
    # set on the wrapped LocalExecutor, which (unlike AutoExecutor) takes fractional minutes
    executor._executor._executor.update_parameters(timeout_min=30 / 60, signal_delay_s=16)
    job = executor.submit(execute_run, task)
    assert job.result()["status"] == "finished"
    events = [r["event"] for r in read_jsonl(run.run_dir / "fake_calls.jsonl")]
    assert events.count("train") == 2, events  # started, signalled and requeued, resumed
    assert sorted(e for e in events if e.startswith("checkpoint")) == sorted(
        f"checkpoint {n}" for n in (500, 1000, 1500, 2000))  # each checkpoint exactly once
    assert 0 < events.index("train", 1) < events.index("checkpoint 2000")  # resumed mid-run
    state = read_state(run.run_dir)
    assert state["state"] == "finished" and state["attempts"] == 2
