"""Faults and bad inputs of issue 20: each test fails without its fix.

Worker deaths (the fake trainer of tests/study_fakes.py in a real `clipscale run` subprocess), eval
identity of a changed suite, `eval` under the run's lock, config keys validated at load time, dry-run of
a large grid, truncated eval shards, and a report with rows of unknown compute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from clipscale.io import read_jsonl
from clipscale.study.grid import plan
from clipscale.study.runner import run_study
from clipscale.study.spec import load_study
from clipscale.study.state import read_state
from tests.study_fakes import FAKE_HOOKS, fake_flops

ROOT = Path(__file__).parents[1]
STUDY = """
[study]
name = "adv"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[train]
lr = 1e-3
batch_size = 100
checkpoint_points = [0.5, 1.0]

[executor]
jobs = 2

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


def _write_study(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _train_pid(run_dir: Path) -> int | None:
    pids = [e["pid"] for e in read_jsonl(run_dir / "fake_calls.jsonl") if e["event"] == "train"]
    return pids[-1] if pids else None


def test_kill_9_of_a_busy_worker_fails_that_run_alone(tmp_path: Path) -> None:
    path = _write_study(tmp_path)
    study = load_study(path)
    env = {**os.environ, "FAKE_STEP_SECONDS": "0.3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.study_fakes", str(path), "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, victim = time.time() + 60, None
        while victim is None and time.time() < deadline and proc.poll() is None:
            for run in plan(study):
                if (run.run_dir / "metrics.jsonl").exists() and _train_pid(run.run_dir):
                    victim = run
                    break
            time.sleep(0.05)
        assert victim is not None, proc.communicate()
        os.kill(_train_pid(victim.run_dir), signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # never hangs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, (out, err)  # never 0 while a run is unfinished
    state = read_state(victim.run_dir)
    assert state["state"] == "failed" and "SIGKILL" in state["error"], state
    others = [r for r in plan(study) if r.run_id != victim.run_id]
    assert all(read_state(r.run_dir)["state"] == "finished" for r in others), \
        [read_state(r.run_dir) for r in others]
    assert "1 run(s) failed" in err
    result = run_study(load_study(path), jobs=2, hooks=FAKE_HOOKS, retry_failed=True, log=lambda s: None)
    assert result["finished"] == 1 and read_state(victim.run_dir)["state"] == "finished"
