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


def suite_evaluate(*, run_dir: Path, suite: str, data_root: str, device: str, batch_size: int) -> list[dict]:
    """The fake evaluator, but over the suite's own datasets: one record per (checkpoint, dataset)."""
    from clipscale.evals.suite import load_suite
    from clipscale.io import append_jsonl

    done = {(r["checkpoint"], r["dataset"]) for r in read_jsonl(run_dir / "results.jsonl")}
    for job in load_suite(suite, root=data_root).jobs:
        for ckpt in sorted((run_dir / "checkpoints").glob("samples_*.pt")):
            if (str(ckpt), job.dataset.name) not in done:
                append_jsonl(run_dir / "results.jsonl", {"checkpoint": str(ckpt), "dataset": job.dataset.name,
                                                         "task": job.task, "metrics": {"x": 1.0}})
                append_jsonl(run_dir / "fake_calls.jsonl", {"event": f"eval {job.dataset.name}", "pid": 0})
    return []


def _suite(names: list[str]) -> str:
    return "".join(f'[[dataset]]\nname = "{n}"\nformat = "wds"\npath = "{n}"\ntask = "zeroshot_retrieval"\n'
                   for n in names)


def test_changed_suite_evaluates_new_and_edited_datasets_only(tmp_path: Path) -> None:
    from dataclasses import replace

    root = tmp_path / "evaldata"
    for name in ("a", "b"):
        (root / name / "test").mkdir(parents=True)
        (root / name / "test" / "0.tar").write_bytes(b"x" * 10)
    (tmp_path / "suite.toml").write_text(_suite(["a"]))
    text = STUDY.replace("jobs = 2", "jobs = 1") + f'\n[eval]\nsuite = "suite.toml"\ndata_root = "{root}"\n'
    study = load_study(_write_study(tmp_path, text))
    hooks = replace(FAKE_HOOKS, evaluate=suite_evaluate)
    quiet = {"hooks": hooks, "log": lambda s: None}
    assert run_study(study, **quiet)["finished"] == 4
    run = plan(study)[0]

    def evals() -> list[str]:
        events = [e["event"] for e in read_jsonl(run.run_dir / "fake_calls.jsonl")]
        return [e for e in events if e.startswith("eval")]

    assert evals() == ["eval a"] * 2
    (tmp_path / "suite.toml").write_text(_suite(["a", "b"]))  # a dataset joins the suite
    result = run_study(load_study(study.path), **quiet)
    assert result["finished"] == 4 and evals() == ["eval a"] * 2 + ["eval b"] * 2
    trains = [e for e in read_jsonl(run.run_dir / "fake_calls.jsonl") if e["event"] == "train"]
    assert len(trains) == 1  # re-entered for evaluation only
    (root / "b" / "test" / "0.tar").write_bytes(b"y" * 12)  # b's files are edited
    assert run_study(load_study(study.path), **quiet)["finished"] == 4
    assert evals() == ["eval a"] * 2 + ["eval b"] * 4
    records = list(read_jsonl(run.run_dir / "results.jsonl"))
    assert sorted(r["dataset"] for r in records) == ["a", "a", "b", "b"]  # b's old records set aside
    assert run_study(load_study(study.path), **quiet)["finished"] == 0  # nothing changed: nothing runs
    assert len(evals()) == 6


def test_eval_of_a_locked_run_dir_refuses_in_one_line(tmp_path: Path, capsys) -> None:
    from clipscale.cli import main
    from clipscale.study.state import try_lock

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "samples_000000000100.pt").write_bytes(b"not evaluated while locked")
    (tmp_path / "a" / "test").mkdir(parents=True)
    (tmp_path / "suite.toml").write_text(_suite(["a"]))
    held = try_lock(run)  # `clipscale run`, or a first `clipscale eval`, is appending to results.jsonl
    try:
        rc = main(["eval", str(run), "--suite", str(tmp_path / "suite.toml"), "--data-root", str(tmp_path)])
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "locked by pid" in err[0], err
    assert not (run / "results.jsonl").exists()
