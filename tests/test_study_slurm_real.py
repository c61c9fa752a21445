"""`clipscale run --executor slurm` against a real SLURM (slurmctld + slurmd + slurmdbd on this machine).

CI brings one up (`.ci/run`, ../shared/tools/slurm-single-node.sh); these tests skip only where
`sbatch` is absent. Real trainer, real jobs, tiny models. Run lengths are calibrated on this machine
(one local 1-thread training) so a run trains a set number of seconds whatever the CPU: ~20 s for
the 3-run studies, ~170 s for the time-limit run, which must outlive the USR2 that submitit asks SLURM
to send 90 s before its 3-minute limit (SLURM checks limits about every 30 s). That run starts first,
in the background, and overlaps the other tests: with 1 CPU per job, the 2-core node runs it beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

# CI (.ci/run) sets CLIPSCALE_REQUIRE_SLURM: there a missing sbatch fails these tests instead of skipping them
NO_SLURM = shutil.which("sbatch") is None and not os.environ.get("CLIPSCALE_REQUIRE_SLURM")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NO_SLURM, reason="needs a SLURM cluster (sbatch)")]

BATCH = 64
STUDY_NAMES = ("timelimit", "refused", "reattach", "faults")
STUDY = """
[study]
name = "{name}"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 600

[train]
batch_size = {batch}
checkpoint_points = [0.25, 0.5, 0.75, 1.0]
workers = 0
log_every = 10

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 600
samples_seen = {samples}
seed = [{seeds}]

[eval]
suite = "synth"
samples_per_task = 40
batch_size = 64

[slurm]
cpus_per_task = 1
time_min = {time_min}
max_requeue = 6
{extra}
"""


def _write_study(root: Path, name: str, *, seconds: float, rate: float, runs: int = 3, time_min: int = 20,
                 extra: str = "", samples: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    samples = samples or max(8, int(rate * seconds / BATCH)) * BATCH
    path = root / "study.toml"
    path.write_text(STUDY.format(name=name, batch=BATCH, samples=samples, time_min=time_min, extra=extra,
                                 seeds=", ".join(str(i) for i in range(runs))))
    return path


def _clipscale(*args: str, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - the child owns it; closed when the test's process ends
    return subprocess.Popen([sys.executable, "-m", "clipscale.cli", *args], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "out" / "runs").glob("*") if p.is_dir())


def _job(run_dir: Path) -> str | None:
    return _read(run_dir / "slurm_job.json").get("job_id")


def _squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return out or "GONE"


def _samples_now(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["samples_seen"] if lines else 0


def _wait(what: str, cond: Any, timeout: float, poll: float = 1.0) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _mid_training(root: Path, exclude: set[str], *, need_latest: bool = False) -> Path | None:
    """A run whose job is RUNNING and which has trained a little but is far from done."""
    for run in _runs(root):
        job = _job(run)
        total = _read(run / "run.json").get("samples_seen") or 0
        if not job or run.name in exclude or not total or _squeue_state(job) != "RUNNING":
            continue
        done = _samples_now(run)
        latest = (run / "checkpoints" / "latest.pt").exists() or not need_latest
        running = _read(run / "state.json").get("state") == "running"
        if latest and running and total * 0.2 <= done <= total * 0.7:
            return run
    return None


def _study_job_ids(name: str, since: float) -> set[str]:
    """Every job SLURM's accounting has for the study since `since` (a requeued job keeps its id)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 1))
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", start, "--name", f"clipscale-{name}",
                          "-o", "JobIDRaw"], capture_output=True, text=True, check=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def rate(tmp_path_factory: pytest.TempPathFactory) -> float:
    """This machine's tiny-S0 samples/s on one thread (a 1-CPU job's speed), from a local run."""
    root = tmp_path_factory.mktemp("calibrate")
    path = _write_study(root, "calibrate", seconds=0, rate=0, runs=1, samples=BATCH * 300)
    env = {**os.environ, "CLIPSCALE_CPUS": "1"}
    subprocess.run([sys.executable, "-m", "clipscale.cli", "run", str(path), "--no-report"], env=env,
                   check=True, capture_output=True, timeout=300)
    (run,) = _runs(root)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rates = sorted(json.loads(line)["samples_per_s"] for line in lines)
    return rates[len(rates) // 2]


@pytest.fixture(scope="module", autouse=True)
def time_limited(tmp_path_factory: pytest.TempPathFactory, rate: float) -> Any:
    """The 3-minute-limit study, started first so it overlaps the others; its interrupted summaries are
    watched (each lives until the requeued job finishes), to check where the requeued job resumed."""
    root = tmp_path_factory.mktemp("timelimit")
    path = _write_study(root, "timelimit", seconds=170, rate=rate, runs=1, time_min=3)
    proc = _clipscale("run", str(path), "--executor", "slurm", log=root / "driver.log")
    started = time.time()
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for run in _runs(root):
                summary = _read(run / "summary.json")
                if summary.get("state") == "interrupted" and summary not in seen:
                    seen.append(summary)
            time.sleep(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield {"root": root, "proc": proc, "seen": seen, "done": done, "started": started}
    done.set()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    for name in STUDY_NAMES:  # a failed test must not leave jobs behind for the next one
        subprocess.run(["scancel", "--name", f"clipscale-{name}"], check=False)


def test_sbatch_refusal_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    path = _write_study(tmp_path, "refused", seconds=1, rate=100, runs=1, extra='partition = "no-such-part"')
    proc = subprocess.run([sys.executable, "-m", "clipscale.cli", "run", str(path), "--executor", "slurm"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "sbatch" in errors[0] and "partition" in errors[0].lower(), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").rglob("*.pkl")) and not list((tmp_path / "out").rglob("*.sh"))
    assert not list((tmp_path / "out" / "runs").glob("*"))


def test_killed_driver_rerun_reattaches_and_a_requeue_does_not_fool_it(tmp_path: Path, rate: float) -> None:
    """Happy path end to end, with the driver killed while jobs run and a job requeued mid-training."""
    path = _write_study(tmp_path, "reattach", seconds=20, rate=rate)
    started = time.time()
    first = _clipscale("run", str(path), "--executor", "slurm", log=tmp_path / "first.log")
    _wait("3 submitted jobs", lambda: len([r for r in _runs(tmp_path) if _job(r)]) == 3, 300)
    _wait("a job running", lambda: any(_squeue_state(_job(r)) == "RUNNING" for r in _runs(tmp_path)), 300)
    os.killpg(first.pid, signal.SIGTERM)
    assert _finish(first, 60) == 128 + signal.SIGTERM
    first_log = (tmp_path / "first.log").read_text()
    assert "SLURM job(s) keep running" in first_log, first_log
    assert not (tmp_path / "out" / "report.html").exists()
    jobs = {r.name: _job(r) for r in _runs(tmp_path)}
    assert any(_squeue_state(j) in ("PENDING", "RUNNING") for j in jobs.values())

    second = _clipscale("run", str(path), "--executor", "slurm", log=tmp_path / "second.log")
    _wait("the rerun to attach", lambda: "already in SLURM" in (tmp_path / "second.log").read_text(), 120)
    target = _wait("a run mid-training", lambda: _mid_training(tmp_path, set()), 300, poll=0.5)
    subprocess.run(["scontrol", "requeue", jobs[target.name]], check=True)
    assert _finish(second, 420) == 0, (tmp_path / "second.log").read_text()

    assert {r.name: _job(r) for r in _runs(tmp_path)} == jobs  # no run got a second job
    assert _study_job_ids("reattach", started) == set(jobs.values())
    for run in _runs(tmp_path):
        summary = _read(run / "summary.json")
        assert summary["state"] == "finished" and _read(run / "state.json")["state"] == "finished"
        assert summary["threads"] == 1  # cpus_per_task = 1 on a 2-core node
    requeued = _read(target / "summary.json")
    assert requeued["resumed_from_step"] > 0  # resumed from the latest.pt written on SIGTERM
    assert _read(target / "slurm_job.json")["restarts"] >= 1
    assert _read(target / "state.json")["attempts"] == 2
    report = tmp_path / "out" / "report.html"
    assert report.exists()
    assert report.stat().st_mtime >= max((r / "state.json").stat().st_mtime for r in _runs(tmp_path))
    status = subprocess.run([sys.executable, "-m", "clipscale.cli", "status", str(path)], capture_output=True,
                            text=True, check=True).stdout
    assert all(f"job {j} COMPLETED" in status for j in jobs.values()), status


def test_scancel_and_sigkill_then_rerun_resumes(tmp_path: Path, rate: float) -> None:
    path = _write_study(tmp_path, "faults", seconds=20, rate=rate)
    driver = _clipscale("run", str(path), "--executor", "slurm", log=tmp_path / "driver.log")
    cancelled = _wait("a run mid-training", lambda: _mid_training(tmp_path, set()), 300, poll=0.5)
    subprocess.run(["scancel", _job(cancelled)], check=True)
    killed = _wait("another run mid-training with latest.pt",
                   lambda: _mid_training(tmp_path, {cancelled.name}, need_latest=True), 300, poll=0.5)
    os.kill(json.loads((killed / ".lock").read_text())["pid"], signal.SIGKILL)  # the job's trainer
    assert _finish(driver, 420) == 1, (tmp_path / "driver.log").read_text()
    assert _read(cancelled / "state.json")["state"] == "interrupted"
    state = _read(killed / "state.json")
    assert state["state"] == "failed" and f"SLURM job {_job(killed)} ended" in state["error"], state
    assert not (tmp_path / "out" / "report.html").exists()
    old = {cancelled.name: _job(cancelled), killed.name: _job(killed)}

    rerun = _clipscale("run", str(path), "--executor", "slurm", "--retry-failed", log=tmp_path / "rerun.log")
    assert _finish(rerun, 420) == 0, (tmp_path / "rerun.log").read_text()
    for run in (cancelled, killed):
        assert _job(run) != old[run.name]  # its job was gone: resubmitted
        summary = _read(run / "summary.json")
        assert summary["state"] == "finished" and summary["resumed_from_step"] > 0, summary
    assert (tmp_path / "out" / "report.html").exists()


def test_time_limit_checkpoints_and_resumes_without_repeating_a_step(time_limited: dict[str, Any]) -> None:
    root, proc = time_limited["root"], time_limited["proc"]
    assert _finish(proc, 600) == 0, (root / "driver.log").read_text()
    time_limited["done"].set()
    (run,) = _runs(root)
    stops = [s for s in time_limited["seen"] if s.get("signal") == "SIGUSR2"]
    assert stops, time_limited["seen"]  # stopped by the time-limit warning, at least once
    summary = _read(run / "summary.json")
    assert summary["state"] == "finished"
    assert summary["resumed_from_step"] == stops[-1]["steps"] > 0  # from the step it stopped at, no earlier
    assert _read(run / "slurm_job.json")["restarts"] >= 1  # the same job, requeued
    assert _study_job_ids("timelimit", time_limited["started"]) == {_job(run)}
    assert (root / "out" / "report.html").exists()
