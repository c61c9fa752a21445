"""Progress on stderr for logs that are not a terminal: a line per study run start, per reproduce target."""

from __future__ import annotations

import re
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


# ---------------------------------------------------------------- long fits (issue 21)

def _saturating_table():
    """Two groups of 7 points of E = 0.2 + 2 C^-0.2 with 2 % log-normal scatter."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    c = np.geomspace(1e3, 1e7, 14)
    return pd.DataFrame({"C": c, "E": (0.2 + 2 * c**-0.2) * np.exp(rng.normal(0, 0.02, c.size)),
                         "g": ["a", "b"] * 7})


def test_ticker_says_done_total_elapsed_and_eta_at_most_every_interval() -> None:
    from clipscale.progress import Ticker

    now = [100.0]
    lines: list[str] = []
    ticker = Ticker(lines.append, 40, what="bootstrap", min_interval_s=5.0, clock=lambda: now[0])
    for i in range(40):  # one step per second of the fake clock
        ticker.tick(i, "1 failed" if i == 10 else "")
        now[0] += 1.0
    ticker.finish()
    assert lines == [
        "bootstrap 5/40, 5s elapsed, ETA 35s", "bootstrap 10/40 (1 failed), 10s elapsed, ETA 30s",
        "bootstrap 15/40, 15s elapsed, ETA 25s", "bootstrap 20/40, 20s elapsed, ETA 20s",
        "bootstrap 25/40, 25s elapsed, ETA 15s", "bootstrap 30/40, 30s elapsed, ETA 10s",
        "bootstrap 35/40, 35s elapsed, ETA 5s", "bootstrap 40/40, done in 40s"]
    short: list[str] = []  # a loop over before the first interval says nothing, not even its end
    ticker = Ticker(short.append, 40, what="bootstrap", min_interval_s=5.0, clock=lambda: now[0])
    for i in range(40):
        ticker.tick(i)
        now[0] += 0.1
    ticker.finish()
    assert short == []


def test_a_bootstrapped_fit_reports_its_refits_and_gives_the_same_result(monkeypatch) -> None:
    import numpy as np

    from clipscale.fit.result import fit_law

    df = _saturating_table()
    kwargs = {"y": df.E.to_numpy(), "C": df.C.to_numpy(), "bootstrap": 12, "seed": 3}
    quiet = fit_law("saturating", **kwargs)
    monkeypatch.setattr("clipscale.progress.INTERVAL_S", 0.0)  # a line per refit, whatever the clock says
    lines: list[str] = []
    told = fit_law("saturating", **kwargs, progress=lines.append)
    done = [re.match(r"bootstrap (\d+)/12\b", ln) for ln in lines]
    assert [int(m.group(1)) for m in done if m] == list(range(1, 13)) and all(done), lines
    assert lines[-1].startswith("bootstrap 12/12") and "done in" in lines[-1]
    assert "ETA" in lines[0] and "elapsed" in lines[0]
    # progress reads the clock only: the resamples, hence every refit and CI, are bit-identical
    assert np.array_equal(np.asarray(told.bootstrap_params), np.asarray(quiet.bootstrap_params))
    assert told.to_dict() == quiet.to_dict()


def test_fit_json_keeps_stdout_one_document_with_progress_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from clipscale.cli import main
    from clipscale.fit.table import fit_table

    df = _saturating_table()
    df.to_csv(tmp_path / "t.csv", index=False)
    args = ["fit", str(tmp_path / "t.csv"), "--law", "saturating", "--C", "C", "--y", "E", "--by", "g",
            "--bootstrap", "12", "--loo", "--json"]
    monkeypatch.setattr("clipscale.progress.INTERVAL_S", 0.0)
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # the whole of stdout is the one document
    err = captured.err.splitlines()
    assert err[0] == "fit a (1/2): 7 rows, law saturating, bootstrap 12, leave-one-run-out"
    assert "fit b (2/2): 7 rows, law saturating, bootstrap 12, leave-one-run-out" in err
    assert any(ln.startswith("fit a: bootstrap 12/12, done in") for ln in err), err
    assert any(ln.startswith("fit b: leave-one-run-out 7/7, done in") for ln in err), err
    expected = fit_table(df, law="saturating", C="C", y="E", by="g", bootstrap=12, loo=True)
    assert json.loads(json.dumps(doc["fits"])) == json.loads(json.dumps(expected["fits"]))


def test_the_studys_fitting_stage_reports_each_target_and_law(tmp_path: Path) -> None:
    from clipscale.io import dumps
    from clipscale.study.pipeline import fit_stage
    from tests.test_study_checks import _demo_table, _fit_study

    study, df = _fit_study(tmp_path, laws='["power", "frontier"]'), _demo_table()
    lines: list[str] = []
    told = fit_stage(study, df, progress=lines.append)
    assert [ln for ln in lines if ln.startswith("fits: ")] == [
        "fits: target 1/1 synth_retrieval image_retrieval_recall@5, law power (1/2)",
        "fits: target 1/1 synth_retrieval image_retrieval_recall@5, law frontier (2/2)"]
    assert "fit uniform: 15 rows, law power, bootstrap 100" in lines
    check = "extrapolation check synth_retrieval/image_retrieval_recall@5/uniform/power: fit: "
    assert any(ln.startswith(check) for ln in lines), lines
    assert dumps(told) == dumps(fit_stage(study, df))  # progress changes nothing in fits.json


# ---------------------------------------------------------------- multi-GPU runs under torchrun (issue 21)

@pytest.mark.slow
def test_torchrun_relays_rank_0s_progress_lines_to_stderr_and_the_log(
        synth_train_shards: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """2 gloo ranks on CPU through the study's driver: rank 0's progress lines, once each, reach the
    driver's stderr (a SLURM log) and RUN_DIR/torchrun.log alike."""
    import json

    from clipscale.study.hooks import train_torchrun
    from tests.fixtures_train import TINY_RUN

    run_dir = tmp_path / "run"
    kwargs = {**TINY_RUN, "progress": True, "samples_seen": 256, "log_every": 2,  # 8 steps at batch 32
              "checkpoint_points": [1.0], "train_data": str(synth_train_shards), "output_dir": str(run_dir)}
    train_torchrun(kwargs, nproc=2)
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2
    logged = [json.loads(ln)["samples_seen"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == [64, 128, 192, 256]  # one record per log interval
    pattern = re.compile(r"run: (\d+)/256 samples \(\d+%\), \d+ samples/s, loss [\d.]+, ETA ")
    err = [ln for ln in capfd.readouterr().err.splitlines() if pattern.match(ln)]
    in_log = [ln for ln in (run_dir / "torchrun.log").read_text().splitlines() if pattern.match(ln)]
    assert err == in_log, (err, in_log)
    seen = [int(pattern.match(ln).group(1)) for ln in err]
    # lines come at log intervals (at most every 10 s, and the last), each once: only rank 0 prints
    assert seen[0] == 64 and seen[-1] == 256 and seen == sorted(set(seen)) and set(seen) <= set(logged), err


FAKE_TORCHRUN = r"""
import signal, sys, time
def stop(signum, frame):
    for i in range(3000):  # ~200 KB, more than a pipe holds: the driver must go on reading after SIGTERM
        print(f"checkpointing {i:04d} " + "x" * 60)
    print("rank 0: interrupted, latest.pt written", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("step 1", flush=True)
print("ready", file=sys.stderr, flush=True)
if sys.argv[1] == "fail":
    print("RuntimeError: rank 1 ran out of memory", flush=True)
    sys.exit(3)
time.sleep(60)
sys.exit(4)
"""


@pytest.mark.parametrize("mode", ["fail", "signal"])
def test_torchrun_output_is_teed_and_signals_and_failures_behave_as_before(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        mode: str) -> None:
    """A stand-in for torchrun: its lines reach stderr and torchrun.log; a failure quotes the log's last
    line; a signal to the driver is relayed as SIGTERM and waited for while the output is still read."""
    import os
    import signal
    import sys
    import threading
    import time

    from clipscale.errors import ClipscaleError
    from clipscale.study import hooks

    monkeypatch.setattr(hooks, "torchrun_command",
                        lambda *a, **k: [sys.executable, "-c", FAKE_TORCHRUN, mode])
    run_dir = tmp_path / "run"
    log = run_dir / "torchrun.log"
    if mode == "fail":
        with pytest.raises(ClipscaleError, match=r"torchrun exited 3: RuntimeError: rank 1 ran out of mem"):
            hooks.train_torchrun({"output_dir": str(run_dir)}, nproc=2)
    else:
        def interrupt() -> None:  # a Ctrl-C (SIGTERM in a study worker) once torchrun is up
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (log.exists() and "ready" in log.read_text()):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            hooks.train_torchrun({"output_dir": str(run_dir)}, nproc=2)
    text = log.read_text()
    err = capfd.readouterr().err
    assert text.startswith("step 1\n") and "step 1\n" in err and "ready\n" in err
    if mode == "signal":  # torchrun got SIGTERM, finished its output, exited 0: nothing was cut or orphaned
        assert text.endswith("rank 0: interrupted, latest.pt written\n")
        assert text.count("checkpointing") == err.count("checkpointing") == 3000


def test_report_json_keeps_stdout_one_document_with_the_fits_progress_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from clipscale.cli import main
    from clipscale.study.demo import install_demo
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study
    from tests.study_fakes import FAKE_HOOKS, fake_flops

    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        path = install_demo(tmp_path / "clipscale-demo")
        text = path.read_text(encoding="utf-8").replace("bootstrap = 200", "bootstrap = 20")  # one target:
        path.write_text(text.replace('metrics = ["image_retrieval_recall@5", "acc1"]',  # the test's time
                                     'metrics = ["image_retrieval_recall@5"]'))
        run_study(load_study(path), hooks=FAKE_HOOKS, jobs=1, log=lambda s: None)
        capsys.readouterr()
        assert main(["report", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["complete"] is True  # stdout: the one document
    err = captured.err.splitlines()
    assert "fits: target 1/1 synth_retrieval image_retrieval_recall@5, law frontier (1/1)" in err, err
    assert any(re.match(r"fit \S+ \(1/\d\): \d+ rows, law \S+, .*bootstrap 20", ln) for ln in err), err
