"""The runner's bookkeeping: skip, resume, locks, failures, a SIGKILLed executor, results and status.

Stages are the instrumented fakes of tests/study_fakes.py (they log every call), so these tests assert
exactly what was trained and evaluated, and stay fast; real training is covered by test_study_e2e.py.
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
from clipscale.study.grid import plan
from clipscale.study.results import build_results_table, write_results
from clipscale.study.runner import run_study
from clipscale.study.spec import load_study
from clipscale.study.state import effective_state, read_state, try_lock
from clipscale.study.status import format_status, run_status, study_status
from tests.study_fakes import FAKE_HOOKS, fake_flops

STUDY = """
[study]
name = "t"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[datasets.zipf]
synth = "zipf"
samples = 4000

[train]
lr = 1e-3  # explicit: no ladder lookup, so job processes never import torch (keeps these tests fast)
batch_size = 100
checkpoint_points = [0.5, 1.0]

[[grid]]
model = ["tiny-S0", "tiny-S1"]
dataset = ["uni", "zipf"]
data_size = [4000]
samples_seen = [1000, 2000]
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


def _events(run_dir: Path) -> list[str]:
    return [r["event"] for r in read_jsonl(run_dir / "fake_calls.jsonl")]


def _run(study, **kw):
    return run_study(study, hooks=FAKE_HOOKS, log=lambda s: None, **kw)


def test_runs_everything_then_skips_finished(study) -> None:
    result = _run(study)
    assert result["finished"] == 8 and result["failed"] == 0
    runs = plan(study)
    assert all(read_state(r.run_dir)["state"] == "finished" for r in runs)
    before = {r.run_id: _events(r.run_dir) for r in runs}
    assert all(ev.count("train") == 1 for ev in before.values())
    again = _run(study)
    assert again["finished"] == 0 and again["planned"] == 8
    assert {r.run_id: _events(r.run_dir) for r in runs} == before  # nothing redone
    # both synthetic datasets and the eval sets were generated once, under the study's data dir
    assert len(list((study.output_dir / "data").glob("*/meta.json"))) == 3


def test_failed_run_is_recorded_rest_goes_on_and_retry(study, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_FAIL_MODEL", "tiny-S1")
    result = _run(study)
    assert result["failed"] == 4 and result["finished"] == 4
    failed = [r for r in plan(study) if r.model == "tiny-S1"]
    state = read_state(failed[0].run_dir)
    assert state["state"] == "failed" and "loss is NaN at step 3" in state["error"]
    assert "RuntimeError" in (failed[0].run_dir / "error.log").read_text()
    status = format_status(study_status(study))
    assert "4 failed" in status and "error: RuntimeError: loss is NaN" in status
    assert _run(study)["failed"] == 0  # not retried unless asked
    assert _events(failed[0].run_dir).count("train") == 1
    monkeypatch.delenv("FAKE_FAIL_MODEL")
    assert _run(study, retry_failed=True)["finished"] == 4
    assert read_state(failed[0].run_dir)["attempts"] == 2
    assert all(s["state"] == "finished" for s in study_status(study))


def test_locked_run_is_skipped_and_interrupted_run_resumes(study) -> None:
    runs = plan(study)
    held = try_lock(runs[0].run_dir)  # another executor is on it
    result = _run(study)
    assert result["locked"] == 1 and result["finished"] == 7
    assert read_state(runs[0].run_dir)["state"] == "pending"
    held.release()
    # an executor killed mid-run leaves state "running" and half the metrics, but no lock
    victim = runs[1].run_dir
    (victim / "state.json").write_text(json.dumps({"state": "running", "attempts": 1}))
    assert effective_state(victim) == "interrupted"
    assert _run(study)["finished"] == 2  # the interrupted run and the formerly locked one
    assert _events(victim).count("train") == 1  # its training had finished: only the bookkeeping reran


def test_results_table_is_rebuilt_from_run_dirs(study, tmp_path: Path) -> None:
    _run(study)
    df = build_results_table(study)
    assert len(df) == 16  # 8 runs x 2 checkpoints x 1 task
    assert {"run_id", "model", "params", "gmacs", "data_size", "samples_seen", "compute", "distribution",
            "seed", "dataset", "task", "image_retrieval_recall@5"} <= set(df.columns)
    assert set(df.distribution) == {"uniform", "zipf"}
    assert (df.compute == df.samples_seen * df.gmacs).all()
    # a duplicated eval record (crash between append and bookkeeping) does not duplicate rows
    run_dir = plan(study)[0].run_dir
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    (run_dir / "results.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    assert len(build_results_table(study)) == 16
    for fmt, ext in (("csv", "csv"), ("parquet", "parquet"), ("json", "jsonl")):
        path = write_results(study, fmt=fmt)
        assert path == study.output_dir / f"results.{ext}" and path.stat().st_size > 0
    import pandas as pd

    assert len(pd.read_parquet(study.output_dir / "results.parquet")) == 16


def test_parallel_local_executor(study) -> None:
    result = _run(study, jobs=2)
    assert result["finished"] == 8
    pids = {r["pid"] for run in plan(study) for r in read_jsonl(run.run_dir / "fake_calls.jsonl")}
    # each run in its own pinned process (so a worker's death is its run's alone), none in this one
    assert len(pids) == 8 and os.getpid() not in pids


def test_sigkilled_executor_rerun_loses_and_duplicates_nothing(study) -> None:
    env = {**os.environ, "FAKE_STEP_SECONDS": "0.05", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "tests.study_fakes", str(study.path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = plan(study)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once some run finished and another is mid-training
        states = [read_state(r.run_dir)["state"] for r in runs]
        if "finished" in states and "running" in states:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = {r.run_id: read_state(r.run_dir)["state"] for r in runs}
    assert "finished" in states.values() and "running" in states.values(), proc.stderr.read()
    interrupted = next(r for r in runs if states[r.run_id] == "running")
    assert effective_state(interrupted.run_dir) == "interrupted"
    finished_before = {r.run_id: _events(r.run_dir) for r in runs if states[r.run_id] == "finished"}
    proc = subprocess.run([sys.executable, "-m", "tests.study_fakes", str(study.path)], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for r in runs:
        events = _events(r.run_dir)
        assert read_state(r.run_dir)["state"] == "finished"
        for e in events:  # every checkpoint written and evaluated exactly once
            if e.startswith(("checkpoint", "eval")):
                assert events.count(e) == 1, (r.run_id, events)
        if r.run_id in finished_before:
            assert events == finished_before[r.run_id]  # finished runs untouched
    assert _events(interrupted.run_dir).count("train") == 2  # resumed, not restarted elsewhere
    assert len(build_results_table(study)) == 16


def test_changed_eval_settings_reevaluate_without_retraining(study) -> None:
    _run(study)
    run_dir = plan(study)[0].run_dir
    edited = study.path.read_text() + "\n[eval]\nsamples_per_task = 77\n"
    study.path.write_text(edited)
    changed = load_study(study.path)
    assert {r.run_id for r in plan(changed)} == {r.run_id for r in plan(study)}  # same training runs
    assert _run(changed)["finished"] == 8
    events = _events(run_dir)
    assert events.count("train") == 1 and events.count("eval 1000") == 2  # evaluated again, not retrained
    assert len(list(run_dir.glob("results.eval-*.jsonl"))) == 1  # the old records are kept aside
    assert len(build_results_table(changed)) == 16
    assert _run(changed)["finished"] == 0


def test_edited_cell_reruns_only_that_cell(study) -> None:
    _run(study)
    edited = study.path.read_text().replace("samples_seen = [1000, 2000]", "samples_seen = [1000, 3000]")
    study.path.write_text(edited)
    changed = load_study(study.path)
    old, new = {r.run_id for r in plan(study)}, {r.run_id for r in plan(changed)}
    assert len(old & new) == 4 and len(new - old) == 4
    assert set(build_results_table(changed).run_id) == old & new  # stale runs are not in the table
    assert _run(changed)["finished"] == 4  # only the edited cells train
    assert set(build_results_table(changed).run_id) == new


def test_stale_tmp_files_of_a_killed_writer_are_removed_when_the_run_starts(study) -> None:
    """Issue 10 case 4: a kill mid-write leaves .NAME.XXXX.tmp in the run and checkpoint dirs."""
    run_dir = plan(study)[0].run_dir
    (run_dir / "checkpoints").mkdir(parents=True)
    stale = [run_dir / ".state.json.k1ll3d.tmp", run_dir / "checkpoints" / ".latest.pt.4242.tmp"]
    for p in stale:
        p.write_text("half a file")
    assert _run(study)["finished"] == 8
    assert not [p for p in stale if p.exists()]
    assert not list(run_dir.rglob("*.tmp"))


@pytest.mark.parametrize(("suite", "message"), [
    ("no-such-suite", "study.toml: [eval] suite 'no-such-suite' is neither a file nor a built-in suite"),
    ("missing_suite.toml", "study.toml: [eval] suite: {folder}/missing_suite.toml does not exist"),
    ("bad_task.toml", "unknown task 'zeroshot_clasification'"),
    ("bad_dataset.toml", "dataset 'shapes' path"),
])
def test_bad_eval_suite_is_refused_before_any_training_and_in_dry_run(study, suite: str, message: str,
                                                                      capsys) -> None:
    """Issue 10 case 6: a typo in the suite must not cost the whole grid's training."""
    from clipscale.cli import main

    folder = study.path.parent
    (folder / "bad_task.toml").write_text('[[dataset]]\nname = "synth_shape"\nformat = "synth"\n'
                                          'path = "synth_shape"\ntask = "zeroshot_clasification"\n')
    (folder / "bad_dataset.toml").write_text('[[dataset]]\nname = "shapes"\nformat = "synth"\n'
                                             'path = "synth_shapes"\ntask = "zeroshot_classification"\n')
    study.path.write_text(study.path.read_text() + f'\n[eval]\nsuite = "{suite}"\n')
    for argv in (["run", str(study.path), "--dry-run"], ["run", str(study.path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("clipscale: error: ") and message.format(folder=folder) in err, err
        assert err.count("\n") == 1, err
    assert not study.runs_dir.exists()  # nothing trained


def test_run_exits_nonzero_while_failed_runs_remain(study, monkeypatch, capsys) -> None:
    """Issue 10 case 6: `run` without --retry-failed exited 0 with failed runs skipped."""
    from clipscale.study.cli import run_exit_status

    monkeypatch.setenv("FAKE_FAIL_MODEL", "tiny-S1")
    assert run_exit_status(_run(study)) == 1
    monkeypatch.delenv("FAKE_FAIL_MODEL")
    capsys.readouterr()
    again = _run(study)  # nothing runs: the failed ones are skipped, not retried
    assert again["finished"] == 0 and again["failed"] == 0
    assert run_exit_status(again) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4 run(s) failed" in err and "--retry-failed" in err
    assert run_exit_status(_run(study, retry_failed=True)) == 0


def test_stream_runs_refuse_an_executor_with_another_world_size(study, capsys) -> None:
    """Stream-mode run ids include the study file's world size ([slurm] nodes x gpus_per_node): `--executor
    local` (one rank here) must not train them; index-mode runs do not depend on it and still run."""
    from clipscale.cli import main

    text = study.path.read_text()
    study.path.write_text(text + '\n[slurm]\nnodes = 2\ngpus_per_node = 4\n')
    assert _run(load_study(study.path))["finished"] == 8  # index mode: same batches on any world size
    capsys.readouterr()  # those runs' "start RUN_ID" lines (issue 21)
    stream = text.replace('checkpoint_points = [0.5, 1.0]',
                          'checkpoint_points = [0.5, 1.0]\ndata_mode = "stream"')
    study.path.write_text(stream + '\n[slurm]\nnodes = 2\ngpus_per_node = 4\n')
    assert main(["run", str(study.path), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    first = plan(load_study(study.path))[0].run_id
    assert err.count("\n") == 1 and f"stream-mode run {first} is planned for world size 8" in err, err
    assert "world size 1" in err
    assert not [r.run_id for r in plan(load_study(study.path)) if (study.runs_dir / r.run_id).exists()]
    assert "start " not in err  # refused before any run started: nothing trained
    study.path.write_text(stream + '\n[executor]\ngpus_per_run = 1\n')  # the local launch it describes
    assert _run(load_study(study.path))["finished"] == 8


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_jobs_below_one_is_refused(study, jobs: str, capsys) -> None:
    """Tour 3 #24: `run --jobs 0` fell back to [executor] jobs without a word."""
    from clipscale.cli import main

    for extra in ([], ["--dry-run"]):
        argv = ["run", str(study.path), "--jobs", jobs, *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == f"clipscale: error: --jobs: expected a positive number of runs at once, got {jobs}\n"
    assert not study.output_dir.exists()


def test_a_rerun_of_a_finished_study_says_all_runs_were_already_finished(study) -> None:
    """Tour 3 #13 and #24: a rerun with nothing to do ended on "0 finished, 0 failed, 0 skipped, ..."; the
    plan line offered --retry-failed with 0 failed."""
    first: list[str] = []
    run_study(study, hooks=FAKE_HOOKS, log=first.append)
    assert first[0] == "study t: 8 runs, 0 finished, 8 to run"  # no --retry-failed hint: nothing failed
    assert first[-1] == "study t: this run: 8 finished"
    again: list[str] = []
    result = run_study(study, hooks=FAKE_HOOKS, log=again.append)
    assert again == ["study t: 8 runs, 8 finished, 0 to run",
                     "study t: all 8 runs were already finished; none ran now"]
    assert result["already_finished"] == 8 and result["finished"] == 0


def _interrupted_train(kwargs: dict) -> dict:
    """A trainer that took a signal after its first batch: checkpointed, resumable."""
    return {"state": "interrupted", "samples_seen": 100, "signal": "SIGINT"}


def test_a_run_interrupted_at_jobs_1_is_not_reported_as_zero_running_runs(study) -> None:
    """Tour 3 #24: at jobs 1 the interrupted run has checkpointed before the executor stops; "0 running
    run(s) checkpoint" read as if it had not. Outcome lines use thousands separators, as start lines do."""
    import dataclasses

    lines: list[str] = []
    hooks = dataclasses.replace(FAKE_HOOKS, train=_interrupted_train)
    result = run_study(study, hooks=hooks, jobs=1, log=lines.append)
    assert result["signal"] == "SIGINT" and result["interrupted"] == 1
    (outcome,) = [line for line in lines if line.startswith("[1/8]")]
    assert outcome.startswith("[1/8] interrupted tiny-S") and " 2,000 samples, " in outcome
    assert outcome.endswith(": SIGINT, resumable")
    assert "stopping on SIGINT: no further run starts" in lines
    assert not [line for line in lines if "0 running run(s)" in line]
    assert "study t: this run: 1 interrupted" in lines


def test_status_and_plan_columns_stay_aligned_for_long_ids_and_sample_counts(study) -> None:
    """Tour 3 #24: `tiny-S0-bpe-...` run ids and 11-digit sample counts shifted the fixed-width columns of
    `status` and `run --dry-run`."""
    import dataclasses

    from clipscale.study.grid import format_plan

    short = plan(study)[0]
    long = dataclasses.replace(short, run_id="tiny-S0-bpe-327bfc8f8942", model="tiny-S0-bpe",
                               dataset="emoji_third", samples_seen=12_800_000_000, data_size=1_528)
    rows = [run_status(r) for r in (short, long)]
    for text in (format_status(rows), format_plan([short, long])):
        header, first, second = text.splitlines()[:3]
        for line, run in ((first, short), (second, long)):
            assert line.startswith(run.run_id + " ")
            assert line[header.index("model"):].startswith(run.model + " "), text
            assert line[header.index("dataset"):].startswith(run.dataset + " "), text
        assert "12,800,000,000" in second  # thousands separators, as in the run's other lines
        assert len({len(header), len(first), len(second)}) == 1, text  # right-aligned numbers end together


def test_an_unfinished_study_is_called_incomplete_as_the_report_does(study, monkeypatch) -> None:
    """Tour 3 #24: `run`/`report` text said "partial" where the report and README say "incomplete"."""
    from clipscale.study.pipeline import finish_study

    monkeypatch.setenv("FAKE_FAIL_MODEL", "tiny-S1")
    _run(study)
    lines: list[str] = []
    assert not finish_study(study, log=lines.append)["complete"]
    assert lines[-1].endswith(f"`clipscale report {study.path}` for an incomplete report")
    finish_study(study, require_complete=False, report=False, log=lines.append)
    assert "study t: incomplete: 4 of 8 runs are not finished (4 failed)" in lines
    assert not [line for line in lines if "partial" in line]


@pytest.mark.parametrize("stage", ["fit_stage", "write_report"])
def test_ctrl_c_while_rebuilding_the_report_leaves_the_previous_one_in_place(study, monkeypatch, capsys,
                                                                             stage: str) -> None:
    """Tour 3 #10: Ctrl-C in `clipscale run`'s results -> fits -> report stage removed report.html and left
    report.stale.html, with only "clipscale: interrupted" said. The previous report is complete (only
    older): it stays report.html, and one line says so and how to rebuild it. A failure still sets it
    aside."""
    from clipscale import report as report_pkg
    from clipscale.cli import main
    from clipscale.study import pipeline

    _run(study)
    assert main(["report", str(study.path)]) == 0
    report = study.output_dir / "report.html"
    before = report.read_bytes()
    capsys.readouterr()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline if stage == "fit_stage" else report_pkg, stage, interrupted)
    assert main(["run", str(study.path)]) == 130
    err = capsys.readouterr().err.splitlines()  # after the fitting stage's progress lines
    assert err[-2:] == [f"clipscale: the report was not rebuilt: {report} is the previous one, left in "
                        f"place; `clipscale report {study.path}` rebuilds it", "clipscale: interrupted"]
    assert report.read_bytes() == before and not (study.output_dir / "report.stale.html").exists()

    def failing(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(pipeline if stage == "fit_stage" else report_pkg, stage, failing)
    with pytest.raises(ValueError):
        main(["report", str(study.path)])
    assert not report.exists() and (study.output_dir / "report.stale.html").read_bytes() == before
