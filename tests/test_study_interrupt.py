"""Signals to `clipscale run` (issue 10, case 1): an interrupted run is never marked finished.

SIGTERM (SLURM preemption, time limit, `kill`), SIGINT (Ctrl-C, sent to the whole foreground process
group) and kill -9 of the executor, at jobs 1 and 2, while runs train. After each: no run is "finished"
unless its summary reached its samples seen, the executor stopped promptly (runs left that never
started) with exit status 128 + signal and named the interrupted runs, no worker outlived it, and a
rerun resumes the interrupted runs and finishes the study with every checkpoint evaluated once.

The executor mechanics use the fake trainer of tests/study_fakes.py, which handles signals like the
real one (flag, checkpoint, "interrupted" summary); one test uses the real trainer at jobs 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from clipscale.io import read_jsonl
from clipscale.study.cli import run_exit_status
from clipscale.study.grid import plan
from clipscale.study.results import build_results_table
from clipscale.study.runner import run_study
from clipscale.study.spec import load_study
from clipscale.study.state import effective_state, read_state
from tests.executor_tasks import process_alive
from tests.study_fakes import FAKE_HOOKS, fake_flops

ROOT = Path(__file__).parents[1]
STUDY = """
[study]
name = "sig"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[train]
lr = 1e-3
batch_size = 100
checkpoint_points = [0.5, 1.0]

[[grid]]
model = ["tiny-S0", "tiny-S1"]
dataset = ["uni"]
data_size = [4000]
samples_seen = [500, 1000]
"""


@pytest.fixture(autouse=True)
def _fake_flops():
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        yield


@pytest.fixture
def study(tmp_path: Path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    return load_study(path)


def _env(step_seconds: float = 0.2) -> dict[str, str]:
    return {**os.environ, "FAKE_STEP_SECONDS": str(step_seconds), "PYTHONPATH": str(ROOT)}


def _start(study, jobs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.study_fakes", str(study.path), str(jobs)]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _events(run_dir: Path) -> list[dict]:
    return list(read_jsonl(run_dir / "fake_calls.jsonl"))


def _training(run_dir: Path) -> bool:
    return read_state(run_dir)["state"] == "running" and (run_dir / "metrics.jsonl").exists()


def _wait_until_training(study, proc: subprocess.Popen, n: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if sum(_training(r.run_dir) for r in plan(study)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"never saw {n} run(s) training: {proc.communicate()}")


def _worker_pids(study, executor_pid: int) -> set[int]:
    return {e["pid"] for r in plan(study) for e in _events(r.run_dir)} - {executor_pid}


def _check_after_stop(study) -> list:
    """No run is finished short of its samples seen, none is left running; returns the interrupted runs."""
    interrupted = []
    for run in plan(study):
        state = effective_state(run.run_dir)
        summary_path = run.run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        if state == "finished":
            assert summary["state"] == "finished" and summary["samples_seen"] >= run.samples_seen
        assert state in ("pending", "finished", "interrupted"), (run.run_id, state)
        if state == "interrupted":
            assert summary.get("state") != "finished", run.run_id
            assert not (run.run_dir / "results.jsonl").exists() or summary.get("state") == "interrupted"
            interrupted.append(run)
    assert any(effective_state(r.run_dir) == "pending" for r in plan(study)), "the executor did not stop"
    return interrupted


def _rerun_completes(study, jobs: int, interrupted: list) -> None:
    result = run_study(load_study(study.path), jobs=jobs, hooks=FAKE_HOOKS, log=lambda s: None)
    assert run_exit_status(result) == 0 and result["signal"] is None
    for run in plan(study):
        events = [e["event"] for e in _events(run.run_dir)]
        assert read_state(run.run_dir)["state"] == "finished", run.run_id
        assert json.loads((run.run_dir / "summary.json").read_text())["samples_seen"] == run.samples_seen
        for e in events:  # every checkpoint written and evaluated exactly once
            if e.startswith(("checkpoint", "eval")):
                assert events.count(e) == 1, (run.run_id, events)
    for run in interrupted:
        events = [e["event"] for e in _events(run.run_dir)]
        assert events.count("train") == 2 and any(e.startswith("interrupted") for e in events)  # resumed
    assert len(build_results_table(study)) == 2 * len(plan(study))


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_study_leaves_runs_resumable(study, jobs: int, sig: signal.Signals) -> None:
    proc = _start(study, jobs)
    _wait_until_training(study, proc, jobs)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground process group
    else:
        proc.send_signal(sig)  # SLURM / kill: the executor alone
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (out, err)
    interrupted = _check_after_stop(study)
    assert 1 <= len(interrupted) <= jobs
    # the interruption is reported once, in one line, with no traceback; the other stderr lines are the
    # "start RUN_ID" progress lines of the runs that started (issue 21)
    lines = err.strip().splitlines()
    reported = [line for line in lines if "interrupted" in line]
    assert len(reported) == 1 and f"interrupted by {sig.name}" in reported[0], err
    assert "Traceback" not in err, err
    assert all(line.startswith("start ") for line in lines if line not in reported), err
    assert all(r.run_id in reported[0] for r in interrupted)  # the start lines name them too
    assert all(read_state(r.run_dir)["state"] == "interrupted" for r in interrupted)
    assert not [p for p in _worker_pids(study, proc.pid) if process_alive(p)]  # went with the executor
    _rerun_completes(study, jobs, interrupted)


def test_sigterm_to_the_whole_process_group_fails_no_run(study) -> None:
    """`timeout` and `kill -TERM -PGID` signal the executor's process group, its fork server included
    (workers have groups of their own): the server's death must not pass running workers for dead."""
    proc = _start(study, 2)
    _wait_until_training(study, proc, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    interrupted = _check_after_stop(study)  # none failed
    assert 1 <= len(interrupted) <= 2 and "Traceback" not in err, err
    (reported,) = [line for line in err.splitlines() if "interrupted by SIGTERM" in line]
    assert f"{len(interrupted)} run(s) left resumable" in reported, err  # not taken for dead workers
    assert all(r.run_id in reported for r in interrupted), err
    assert not [p for p in _worker_pids(study, proc.pid) if process_alive(p)]
    _rerun_completes(study, 2, interrupted)


def test_sigkilled_parallel_executor_leaves_no_orphan_marking_runs_finished(study) -> None:
    proc = _start(study, 2)
    _wait_until_training(study, proc, 2)
    proc.kill()
    proc.wait()
    started = {r.run_id for r in plan(study) if _events(r.run_dir)}
    workers = _worker_pids(study, proc.pid)
    assert len(workers) == 2
    deadline = time.time() + 30
    while time.time() < deadline and any(process_alive(p) for p in workers):
        time.sleep(0.05)
    assert not [p for p in workers if process_alive(p)], "orphan workers outlived the executor"
    assert {r.run_id for r in plan(study) if _events(r.run_dir)} == started  # orphans took no new run
    interrupted = _check_after_stop(study)
    assert 1 <= len(interrupted) <= 2
    # each worker took its parent's death as SIGTERM: its trainer checkpointed and it recorded that
    assert all(read_state(r.run_dir)["state"] == "interrupted" for r in interrupted)
    _rerun_completes(study, 2, interrupted)


REAL_STUDY = """
[study]
name = "real"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 300

[train]
batch_size = 16
checkpoint_points = [0.5, 1.0]
workers = 0
threads = 1
log_every = 1

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 300
samples_seen = [160, 1600]

[eval]
suite = "synth"
samples_per_task = 20
batch_size = 64
"""


@pytest.mark.slow
def test_real_trainer_sigterm_at_jobs_1_resumes(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(REAL_STUDY)
    study = load_study(path)
    runs = plan(study)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "clipscale.cli", "run", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(len(list(read_jsonl(r.run_dir / "metrics.jsonl"))) >= 3 for r in runs):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    (victim,) = [r for r in runs if read_state(r.run_dir)["state"] == "interrupted"]
    summary = json.loads((victim.run_dir / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["samples_seen"] < victim.samples_seen
    assert not (victim.run_dir / "results.jsonl").exists()  # partial checkpoints were not evaluated
    other = next(r for r in runs if r is not victim)
    assert read_state(other.run_dir)["state"] == "pending"  # nothing started after the signal
    assert victim.run_id in err and "interrupted by SIGTERM" in err
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for run in runs:
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert read_state(run.run_dir)["state"] == "finished" and summary["samples_seen"] == run.samples_seen


def test_run_marked_finished_short_of_its_samples_is_resumed(study) -> None:
    """A study damaged by the old behaviour (state finished, summary interrupted) heals on rerun."""
    result = run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    assert result["finished"] == 4
    victim = plan(study)[0]
    metrics = victim.run_dir / "metrics.jsonl"
    kept = metrics.read_text().splitlines()[:3]  # as if SIGTERM had stopped it after 3 steps
    metrics.write_text("\n".join(kept) + "\n")
    (victim.run_dir / "summary.json").write_text(json.dumps({"state": "interrupted", "samples_seen": 300}))
    again = run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    assert again["finished"] == 1 and again["skipped"] == 0
    assert json.loads((victim.run_dir / "summary.json").read_text())["samples_seen"] == victim.samples_seen
    assert [e["event"] for e in _events(victim.run_dir)].count("train") == 2
