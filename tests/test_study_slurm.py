"""The SLURM path through submitit's LocalExecutor: the same job objects a cluster runs, requeue included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from clipscale.errors import ClipscaleError
from clipscale.io import read_jsonl
from clipscale.study.cli import run_exit_status
from clipscale.study.grid import plan
from clipscale.study.hooks import torchrun_command
from clipscale.study.prepare import prepare_dataset, prepare_eval
from clipscale.study.runner import RunTask, execute_run, run_study
from clipscale.study.slurm import SlurmExecutor, _slurm_parameters, job_outcome
from clipscale.study.slurm_jobs import JobTracker, read_record, write_record
from clipscale.study.spec import load_study
from clipscale.study.state import read_state, write_state
from clipscale.study.status import format_status, study_status, watch_status
from clipscale.train.threads import allocated_cpus, threads_per_rank
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


def test_study_runs_as_submitit_jobs(study, tmp_path, monkeypatch, capfd) -> None:
    """--slurm-backend local: the terminal says which job each run is and when it ends; the job record
    and `status` hold submitit's final state, never a SLURM answer about a pid; no folder named `%j`."""
    bin_dir = _fake_bin(tmp_path, monkeypatch, squeue="echo \"$5|PENDING||Priority|0\"", sacct=NO_ACCOUNTING)
    result = run_study(study, executor="slurm", slurm_backend="local", hooks=FAKE_HOOKS, log=lambda s: None)
    assert result["finished"] == 2
    err = capfd.readouterr().err
    rows = {r["run_id"]: r for r in study_status(study)}
    for run in plan(study):
        assert read_state(run.run_dir)["state"] == "finished"
        pids = {r["pid"] for r in read_jsonl(run.run_dir / "fake_calls.jsonl")}
        assert os.getpid() not in pids  # trained inside the job process
        record = read_record(run.run_dir)
        job, kind = record["job_id"], "local job (submitit, no SLURM)"
        assert record["state"] == "FINISHED" and record["backend"] == "local"
        log = study.output_dir / "slurm" / job / f"{job}_0_log.err"
        assert f"run {run.run_id}: submitted as {kind} {job}; log {log}" in err and log.is_file()
        assert f"{kind} {job} of run {run.run_id} ended: FINISHED" in err
        assert rows[run.run_id]["slurm_state"] == "FINISHED"
    assert "PENDING" not in format_status(list(rows.values())) and not _calls(bin_dir, "squeue")
    assert list((study.output_dir / "slurm").glob("*/*_submitted.pkl"))
    assert not (study.output_dir / "slurm" / "%j").exists()


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


# --- SLURM's answers faked on PATH: the driver's bookkeeping without a cluster (the real one is
# --- exercised by tests/test_study_slurm_real.py where sbatch exists)

def _fake_bin(tmp_path: Path, monkeypatch, **scripts: str) -> Path:
    """Executables named after SLURM's commands, first on PATH; each logs its arguments to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"{name} $*\" >> {bin_dir}/calls.log\n{body}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _calls(bin_dir: Path, name: str) -> list[str]:
    log = bin_dir / "calls.log"
    return [ln for ln in log.read_text().splitlines() if ln.startswith(name + " ")] if log.exists() else []


NO_ACCOUNTING = "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1"
PURGED = "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"


def test_time_min_too_short_for_the_timeout_signal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("time_min = 30", "time_min = 2"))
    with pytest.raises(ClipscaleError) as err:
        load_study(path)
    msg = str(err.value)
    assert "\n" not in msg and "[slurm] time_min" in msg and "USR2 90 s before the limit" in msg
    path.write_text(STUDY.replace("time_min = 30", "time_min = 3"))
    assert load_study(path).slurm.time_min == 3


def test_threads_follow_the_allocation(monkeypatch) -> None:
    monkeypatch.delenv("CLIPSCALE_CPUS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert threads_per_rank(workers=0, ranks=1) == 16  # not the machine's core count
    assert threads_per_rank(workers=2, ranks=2) == 6  # 16 // 2 ranks - 2 loader workers
    assert threads_per_rank(workers=8, ranks=4) == 1  # never below one
    monkeypatch.setenv("CLIPSCALE_CPUS", "3")  # a `--jobs N` worker's pinned cores win
    assert allocated_cpus() == 3 and threads_per_rank(workers=1, ranks=1) == 2
    monkeypatch.delenv("CLIPSCALE_CPUS")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allocated_cpus() == len(os.sched_getaffinity(0))


def test_dead_job_without_accounting_fails_its_run_within_two_polls(study, tmp_path, monkeypatch) -> None:
    """squeue no longer lists the job, sacct does not work, the run recorded no result: failed, with why."""
    bin_dir = _fake_bin(tmp_path, monkeypatch, squeue=PURGED, sacct=NO_ACCOUNTING)
    run = plan(study)[0]
    run.run_dir.mkdir(parents=True)
    write_state(run.run_dir, "running")  # what the killed job left behind
    tracker = JobTracker(min_interval=0)
    tracker.watch("41")
    assert tracker.ended("41") is None  # one answer without it could be a race: not yet
    final = tracker.ended("41")
    assert final is not None and final.state == "GONE"
    outcome = job_outcome(run, "41", final)
    assert outcome["status"] == "failed" and read_state(run.run_dir)["state"] == "failed"
    assert "SLURM job 41" in outcome["error"] and "no accounting" in outcome["error"]
    assert len(_calls(bin_dir, "squeue")) == 2


def test_squeue_not_answering_never_ends_a_job(tmp_path, monkeypatch) -> None:
    _fake_bin(tmp_path, monkeypatch, squeue="echo 'slurm_load_jobs error: Socket timed out' >&2; exit 1",
              sacct=NO_ACCOUNTING)
    tracker = JobTracker(min_interval=0)
    tracker.watch("7")
    assert all(tracker.ended("7") is None for _ in range(4))


def test_rerun_reattaches_to_a_live_job_instead_of_submitting(study, tmp_path, monkeypatch) -> None:
    bin_dir = _fake_bin(tmp_path, monkeypatch, squeue="echo '77|RUNNING|node3|None|1'", sacct=NO_ACCOUNTING,
                        sbatch="echo 'Submitted batch job 99'")
    run = plan(study)[0]
    write_record(run.run_dir, "77")
    task = RunTask(plan=run, train_data="x", eval_suite="synth", eval_root="y", eval_batch_size=8)
    executor = SlurmExecutor(study, backend="slurm")
    handle = executor.submit(execute_run, task)
    assert handle.job_id == "77" and not _calls(bin_dir, "sbatch")
    assert not handle.done()
    assert read_record(run.run_dir)["node"] == "node3" and read_record(run.run_dir)["restarts"] == 1
    rows = {r["run_id"]: r for r in study_status(study)}
    assert rows[run.run_id]["job_id"] == "77" and rows[run.run_id]["slurm_state"] == "RUNNING"
    assert "job 77 RUNNING requeued x1 on node3" in format_status(list(rows.values()))


def test_sbatch_refusal_is_one_line_and_leaves_no_files(study, tmp_path, monkeypatch) -> None:
    _fake_bin(tmp_path, monkeypatch, sbatch="echo 'sbatch: error: Invalid generic resource (gres) "
              "specification' >&2; exit 1")
    run = plan(study)[0]
    task = RunTask(plan=run, train_data="x", eval_suite="synth", eval_root="y", eval_batch_size=8)
    executor = SlurmExecutor(study, backend="slurm")
    with pytest.raises(ClipscaleError) as err:
        executor.submit(execute_run, task)
    assert str(err.value).count("\n") == 0 and "sbatch: Invalid generic resource (gres)" in str(err.value)
    assert not list(study.output_dir.rglob("*.pkl")) and not list(study.output_dir.rglob("*.sh"))
    assert not run.run_dir.exists()


def test_dry_run_plans_a_cluster_study_whose_paths_are_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    text = STUDY.replace('synth = "uniform"\nsamples = 4000', 'shards = "/datasets/laion/{00000..00009}.tar"')
    path.write_text(text + '\n[eval]\nsuite = "synth"\ndata_root = "/datasets/clip_benchmark"\n')
    lines: list[str] = []
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        result = run_study(load_study(path), executor="slurm", dry_run=True, log=lines.append)
    assert result["planned"] == 2 and result["total_compute"] > 0
    assert result["unchecked"] == ["/datasets/laion/{00000..00009}.tar", "/datasets/clip_benchmark"]
    assert "not checked" in lines[-1] and "/datasets/clip_benchmark" in lines[-1]
    with mock.patch("clipscale.study.grid.default_flops", fake_flops), pytest.raises(ClipscaleError):
        run_study(load_study(path), executor="slurm", log=lines.append)  # a real run still refuses


def test_exit_status_while_runs_are_elsewhere(capsys) -> None:
    """A run another process holds is not a finished study; a stopped driver names the jobs left running."""
    assert run_exit_status({"outcomes": [{"run_id": "a", "status": "locked"}], "failed_runs": []}) == 1
    assert "held by another process (a)" in capsys.readouterr().err
    stopped = {"signal": "SIGTERM", "interrupted_runs": [], "running_jobs": ["a (job 12)"],
               "outcomes": [{"run_id": "a", "status": "running", "job_id": "12"}]}
    assert run_exit_status(stopped) == 128 + 15
    assert "1 SLURM job(s) keep running: a (job 12)" in capsys.readouterr().err


def test_status_watch_refreshes_until_interrupted(study, tmp_path, monkeypatch, capsys) -> None:
    _fake_bin(tmp_path, monkeypatch, squeue="echo '5|PENDING||Priority|0'", sacct=NO_ACCOUNTING)
    write_record(plan(study)[0].run_dir, "5")
    sleeps: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():  # another test's leftover thread
            return real_sleep(seconds)
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", sleep)
    assert watch_status(study, every=3) == 0
    out = capsys.readouterr().out
    assert out.count("job 5 PENDING") == 2 and sleeps == [3, 3]  # printed, waited, printed again
    assert "queued" in out  # a queued run is not a run never submitted


def test_time_limit_signal_checkpoints_the_trainer(synth_train_shards: Path, tmp_path: Path) -> None:
    """submitit's USR2 (90 s before the limit) stops `clipscale train` like SIGTERM: latest.pt at the stop."""
    from clipscale.models import read_checkpoint

    out = tmp_path / "run"
    args = ["--train-data", str(synth_train_shards), "--output-dir", str(out), "--model", "tiny-S0",
            "--samples-seen", "320000", "--batch-size", "32", "--lr", "0.002", "--workers", "0",
            "--threads", "1", "--log-every", "10", "--checkpoint-points", "1.0"]
    proc = subprocess.Popen([sys.executable, "-m", "clipscale.cli", "train", *args], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    proc.wait(timeout=60)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["signal"] == "SIGUSR2"
    assert 0 < summary["steps"] < 10000
    assert read_checkpoint(out / "checkpoints" / "latest.pt")["clipscale"]["step"] == summary["steps"]
