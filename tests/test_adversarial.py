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

from clipscale.errors import ClipscaleError
from clipscale.io import read_jsonl
from clipscale.study.grid import default_flops as REAL_FLOPS
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



def test_kill_9_of_a_worker_preparing_data_leaves_its_runs_pending(tmp_path: Path) -> None:
    """The dataset's preparing process is killed: no run on it started, so none is failed; run exits 1
    naming them, and a plain rerun prepares the data and finishes them."""
    path = _write_study(tmp_path)
    study = load_study(path)
    calls = study.data_dir / "prep_calls.jsonl"
    env = {**os.environ, "FAKE_PREP_SECONDS": "30", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.study_fakes", str(path), "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not calls.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        (prep,) = read_jsonl(calls)
        os.kill(prep["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)  # never hangs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, (out, err)
    assert "4 run(s) not finished" in err and "rerun `clipscale run`" in err, err
    for run in plan(study):
        assert read_state(run.run_dir)["state"] == "pending" and not (run.run_dir / "metrics.jsonl").exists()
    assert not list(study.data_dir.glob(".uni-*"))  # the killed worker's half-written folder is cleared
    result = run_study(load_study(path), jobs=2, hooks=FAKE_HOOKS, log=lambda s: None)
    assert result["finished"] == 4 and len(list(read_jsonl(calls))) == 2


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


def _wds_set(path: Path, kind: str | None, caption: str = "a red square") -> None:
    """A one-sample CLIP_benchmark wds set (the image bytes are never decoded by these tests)."""
    import io
    import tarfile

    (path / "test").mkdir(parents=True, exist_ok=True)
    (path / "test" / "nshards.txt").write_text("1\n")
    if kind is not None:
        (path / "dataset_type.txt").write_text(kind + "\n")
    with tarfile.open(path / "test" / "0.tar", "w") as tar:
        label = ("s0.txt", caption.encode()) if kind == "retrieval" else ("s0.cls", b"0")
        for name, data in (("s0.png", b"png"), label):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _suite(names: list[str]) -> str:
    return "".join(f'[[dataset]]\nname = "{n}"\nformat = "wds"\npath = "{n}"\ntask = "zeroshot_retrieval"\n'
                   for n in names)


def test_changed_suite_evaluates_new_and_edited_datasets_only(tmp_path: Path) -> None:
    from dataclasses import replace

    root = tmp_path / "evaldata"
    for name in ("a", "b"):
        _wds_set(root / name, "retrieval")
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
    _wds_set(root / "b", "retrieval", caption="edited")  # b's files are edited
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
    _wds_set(tmp_path / "a", "retrieval")
    (tmp_path / "suite.toml").write_text(_suite(["a"]))
    held = try_lock(run)  # `clipscale run`, or a first `clipscale eval`, is appending to results.jsonl
    try:
        rc = main(["eval", str(run), "--suite", str(tmp_path / "suite.toml"), "--data-root", str(tmp_path)])
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "locked by pid" in err[0], err
    assert not (run / "results.jsonl").exists()



def test_eval_of_a_truncated_shard_counts_the_lost_samples_as_skipped(tmp_path: Path, caplog) -> None:
    from clipscale.evals import evaluate_run
    from tests.test_evals_data import cls_samples, make_wds
    from tests.test_evals_runner import save_tiny

    root = make_wds(tmp_path / "d", cls_samples([i % 2 for i in range(100)]), classnames=["red", "blue"],
                    templates=["a {c} shape"])
    shard = root / "test" / "0.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy cut at about half
    (tmp_path / "s.toml").write_text('[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\n'
                                     'task = "zeroshot_classification"\n')
    run = tmp_path / "run"
    save_tiny(run / "checkpoints" / "samples_000000000100.pt")
    (record,) = evaluate_run(run, suite=tmp_path / "s.toml")
    assert 0 < record["n_samples"] < 100 and record["skipped"] >= 1  # the cut sample, at least
    (stored,) = read_jsonl(run / "results.jsonl")
    assert (stored["n_samples"], stored["skipped"]) == (record["n_samples"], record["skipped"])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(shard) in warning and "truncated" in warning and "lost, counted as skipped" in warning
    (root / "test" / "0_stats.json").write_text('{"successes": 100}')  # img2dataset's declared count
    (run / "results.jsonl").unlink()
    (record,) = evaluate_run(run, suite=tmp_path / "s.toml")
    assert record["n_samples"] + record["skipped"] == 100


BASE = STUDY.replace("samples_seen = [500, 1000]\n", "")


@pytest.mark.parametrize(("grid", "extra", "named"), [
    ("compute = [inf]", "", "compute[0]"),
    ("samples_seen = [500]", "[eval]\nbatch_size = 0", "[eval] batch_size"),
    ("samples_seen = [500]", "[eval]\nsamples_per_task = -3", "[eval] samples_per_task"),
    ("samples_seen = [500]", "[fit]\nlaws = []", "[fit] laws"),
    ("samples_seen = [500]", "[fit]\npredict_compute = [nan]", "[fit] predict_compute"),
    ("samples_seen = [500]", '[slurm]\nmem_gb = "lots"', "[slurm] mem_gb"),
    ("samples_seen = [500]", "[slurm]\ntime_min = 0", "[slurm] time_min"),
    ("samples_seen = [500]", "[slurm]\npartition = 3", "[slurm] partition"),
])
def test_bad_key_fails_at_load_naming_file_and_key(tmp_path: Path, grid: str, extra: str, named: str) -> None:
    path = _write_study(tmp_path, BASE.replace("[executor]", f"{extra}\n[executor]") + grid + "\n")
    with pytest.raises(ClipscaleError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and named in message, message


def test_threads_per_job_must_be_nonnegative(tmp_path: Path) -> None:
    path = _write_study(tmp_path, BASE.replace("jobs = 2", "jobs = 2\nthreads_per_job = -1")
                        + "samples_seen = [500]\n")
    with pytest.raises(ClipscaleError, match=r"study.toml: \[executor\] threads_per_job"):
        load_study(path)


@pytest.mark.parametrize(("change", "named"), [
    ("compute = [1e300]", "compute: 1e+300 plans"),
    ("samples_seen = [1024]\n[[rules]]\nwhen = {model = \"tiny-s0\"}\nset = {lr = 1e-4}",
     "[[rules]] #1 when = {'model': 'tiny-s0'}: matches no grid cell"),
])
def test_plan_refuses_impossible_cells(tmp_path: Path, change: str, named: str) -> None:
    study = load_study(_write_study(tmp_path, BASE + change + "\n"))
    with pytest.raises(ClipscaleError) as info:
        run_study(study, dry_run=True, hooks=FAKE_HOOKS, log=lambda s: None)
    assert str(study.path) in str(info.value) and named in str(info.value), str(info.value)


def test_batch_larger_than_samples_seen_is_refused_before_training(tmp_path: Path) -> None:
    study = load_study(_write_study(tmp_path, BASE.replace("batch_size = 100", "batch_size = 4096")
                                    + "samples_seen = [1024]\n"))
    with pytest.raises(ClipscaleError, match=r"samples_seen: 1024 samples seen is less than one batch "
                                             r"\(\[train\] batch_size = 4096\)"):
        run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    assert not study.runs_dir.exists()  # nothing trained



def test_samples_seen_not_a_multiple_of_the_batch_is_planned_as_whole_batches_everywhere(
        tmp_path: Path, caplog) -> None:
    """1000 samples at batch 300 trains 4 steps = 1200 samples: plan, run id, status, summary.json, the
    results table and the checkpoints all say 1200 (real tiny training, real FLOPs)."""
    import json
    from dataclasses import replace

    import clipscale.study.hooks as real
    from clipscale.study.results import build_results_table
    from clipscale.study.status import study_status

    text = BASE.replace("batch_size = 100", "batch_size = 300\nworkers = 0\nthreads = 1").replace(
        "samples = 4000", "samples = 600").replace("data_size = [4000]", "data_size = [600]").replace(
        'model = ["tiny-S0", "tiny-S1"]', 'model = ["tiny-S0"]') + "samples_seen = [1000, 1200]\n"
    study = load_study(_write_study(tmp_path, text))
    with mock.patch("clipscale.study.grid.default_flops", REAL_FLOPS):
        (run,) = plan(study)  # 1000 and 1200 are the same training: one run
        assert run.samples_seen == 1200
        (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert line == (f"{study.path}: [[grid]] #1 samples_seen: 1000 is not a whole number of batches "
                        "(batch_size 300); planned and trained as 1200 (4 steps)")
        hooks = replace(FAKE_HOOKS, train=real.train, train_data=real.write_train_data)
        assert run_study(study, hooks=hooks, log=lambda s: None)["finished"] == 1
        summary = json.loads((run.run_dir / "summary.json").read_text())
        (status,) = study_status(study)
        table = build_results_table(study)
    assert summary["samples_seen"] == summary["steps"] * 300 == 1200
    assert status["samples_seen"] == status["samples_total"] == 1200
    assert status["compute_total"] == pytest.approx(summary["compute"], rel=1e-9)
    assert summary["checkpoints"] == ["samples_000000000600.pt", "samples_000000001200.pt"]
    assert sorted(table.samples_seen) == [600, 1200] and set(table.run_samples_seen) == {1200}
    assert table.final.tolist() == [False, True]
    assert json.loads((run.run_dir / "run.json").read_text())["samples_seen"] == 1200


def test_retrieval_task_on_a_classification_wds_set_fails_before_training(tmp_path: Path) -> None:
    root = tmp_path / "evaldata"
    _wds_set(root / "a", "classification")
    (tmp_path / "suite.toml").write_text(_suite(["a"]))
    text = BASE + f'samples_seen = [500]\n[eval]\nsuite = "suite.toml"\ndata_root = "{root}"\n'
    study = load_study(_write_study(tmp_path, text))
    with pytest.raises(ClipscaleError, match=r"task 'zeroshot_retrieval' needs a retrieval set but .*"
                                             r"dataset_type\.txt says 'classification'"):
        run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    (root / "a" / "dataset_type.txt").write_text("retrieval\n")  # declared, but the shard has .cls labels
    with pytest.raises(ClipscaleError, match=r"first sample 's0' has no \.txt entry"):
        run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    (root / "a" / "dataset_type.txt").unlink()  # no type file: the declared task makes it a retrieval set
    with pytest.raises(ClipscaleError, match=r"'s0' has no \.txt entry \(dataset type retrieval"):
        run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    assert not study.runs_dir.exists()


def test_a_wds_set_without_dataset_type_takes_its_type_from_the_declared_task(tmp_path: Path) -> None:
    from clipscale.evals.suite import check_suite, load_suite

    root = tmp_path / "evaldata"
    _wds_set(root / "a", None)
    _wds_set(root / "r", "retrieval", caption="a red square\non grey")
    (root / "r" / "dataset_type.txt").unlink()  # CLIP_benchmark would read it as classification
    (tmp_path / "suite.toml").write_text(_suite(["r"]))
    check_suite(tmp_path / "suite.toml", root=root)  # the pre-training check passes
    (job,) = load_suite(tmp_path / "suite.toml", root=root).jobs
    dataset = job.dataset.load()
    assert dataset.kind == "retrieval" and dataset.captions == [["a red square", "on grey"]]
    mixed = 'task = ["zeroshot_retrieval", "linear_probe"]'
    (tmp_path / "mixed.toml").write_text(_suite(["r"]).replace('task = "zeroshot_retrieval"', mixed))
    with pytest.raises(ClipscaleError, match=r"dataset_type\.txt is missing and the entry's other tasks "
                                             r"read it as classification"):
        check_suite(tmp_path / "mixed.toml", root=root)
    (tmp_path / "cls.toml").write_text(_suite(["a"]).replace("zeroshot_retrieval", "linear_probe"))
    assert load_suite(tmp_path / "cls.toml", root=root).jobs[0].dataset.load().kind == "classification"


def test_dry_run_checks_each_distinct_setting_once_with_progress(tmp_path: Path, monkeypatch) -> None:
    import clipscale.study.grid as grid

    sizes = ", ".join(str(100 * (i + 1)) for i in range(40))
    study = load_study(_write_study(tmp_path, BASE.replace("data_size = [4000]", f"data_size = [{sizes}]")
                                    + "samples_seen = [500, 1000]\nseed = [0, 1, 2]\n"))
    calls, lines = [], []
    real = grid._validate_train
    monkeypatch.setattr(grid, "_validate_train", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(grid, "PROGRESS_EVERY", 100)
    runs = grid.plan(study, progress=lines.append)
    assert len(runs) == 2 * 40 * 2 * 3
    assert len(calls) == 4  # (model, samples seen) pairs, not 480 cells
    assert lines[0] == "planning: 100 of 480 cells" and len(lines) == 4
    monkeypatch.setattr(grid, "MAX_CELLS", 479)
    with pytest.raises(ClipscaleError, match="expands to 480 cells"):
        grid.plan(study)


def test_report_keeps_unknown_compute_rows_out_of_log_plots_and_never_looks_current_after_failure(
        tmp_path: Path) -> None:
    import pandas as pd

    from clipscale.report import write_report
    from clipscale.study.pipeline import finish_study
    from clipscale.study.results import build_results_table

    study = load_study(_write_study(tmp_path, STUDY.replace("jobs = 2", "jobs = 1")))
    run_study(study, hooks=FAKE_HOOKS, log=lambda s: None)
    finish_study(study, log=lambda s: None)
    df = build_results_table(study)
    imported = df.iloc[:2].copy()  # e.g. `clipscale import` of CLIP_benchmark JSONs: compute unknown
    imported[["run_id", "samples_seen", "compute"]] = ["imported-x", None, None]
    table = pd.concat([df, imported], ignore_index=True)
    html = write_report(study, table=table).read_text()
    assert "2 evaluation row(s) have unknown compute" in html and "imported-x" in html
    report = study.output_dir / "report.html"
    with pytest.raises(Exception):  # noqa: B017 - any failure while rebuilding
        write_report(study, table=table, fits={"fits": None})
    assert not report.exists() and (study.output_dir / "report.stale.html").is_file()
