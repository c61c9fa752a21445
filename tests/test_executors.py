"""The local process executor's workers: forked from a warm fork server, yet each task sees the driver
as it was at submit time (environment, working directory, threads), dies with the driver, and is not
taken for dead when the fork server goes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clipscale.errors import ClipscaleError
from clipscale.study.executors import START_METHOD_ENV, ProcessExecutor, start_method
from clipscale.study.worker import import_modules
from tests.executor_tasks import HEAVY, process_alive, sleep_and_record, worker_view

ROOT = Path(__file__).resolve().parents[1]
HAS_FORKSERVER = "forkserver" in mp.get_all_start_methods()
needs_forkserver = pytest.mark.skipif(not HAS_FORKSERVER, reason="no forkserver start method here")
linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_for_file(path: Path, timeout: float = 120.0) -> str:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    return path.read_text()


@needs_forkserver
@linux
def test_workers_fork_from_a_single_threaded_server_with_the_heavy_modules_loaded(monkeypatch) -> None:
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    executor = ProcessExecutor(2, threads=1, pin=False)
    try:
        assert executor.start_method == "forkserver"
        view = executor.submit(worker_view, "X").result(timeout=300)
    finally:
        executor.shutdown()
    assert view["loaded"] == dict.fromkeys(HEAVY, True)  # imported by the server, not by the task
    server = view["ppid"]
    assert server != os.getpid() and process_alive(server)
    assert len(os.listdir(f"/proc/{server}/task")) == 1  # it forks: no thread of its own beside main
    assert view["cuda_initialized"] is False
    assert view["torch_threads"] == 1  # the slot's threads, not the server's OpenMP default


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_task_sees_the_drivers_environment_and_cwd_at_submit_time(method: str, monkeypatch,
                                                                   tmp_path: Path) -> None:
    if method == "forkserver" and not HAS_FORKSERVER:
        pytest.skip("no forkserver start method here")
    monkeypatch.setenv(START_METHOD_ENV, method)
    monkeypatch.setenv("CLIPSCALE_TEST_MARK", "first")
    executor = ProcessExecutor(2, pin=False)
    try:
        assert executor.submit(worker_view, "CLIPSCALE_TEST_MARK").result(timeout=300)["var"] == "first"
        # the server is up by now: what changes afterwards must still reach the next task
        monkeypatch.setenv("CLIPSCALE_TEST_MARK", "second")
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)  # the fork server sets it for itself
        monkeypatch.chdir(tmp_path)
        later = executor.submit(worker_view, "CLIPSCALE_TEST_MARK")
        monkeypatch.setenv("CLIPSCALE_TEST_MARK", "after submit")
        view = later.result(timeout=300)
        blas = executor.submit(worker_view, "OPENBLAS_NUM_THREADS").result(timeout=300)
    finally:
        executor.shutdown()
    assert view["var"] == "second" and Path(view["cwd"]) == tmp_path
    assert blas["var"] is None
    assert view["omp"] == str(executor.threads)  # pinning still applies on top of the driver's environment


def test_start_method_follows_the_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    executor = ProcessExecutor(2, pin=False)
    try:
        view = executor.submit(worker_view, "X").result(timeout=300)
    finally:
        executor.shutdown()
    assert executor.start_method == "spawn" and not any(view["loaded"].values())  # a fresh interpreter
    monkeypatch.setenv(START_METHOD_ENV, "fork")
    with pytest.raises(ClipscaleError, match=f"{START_METHOD_ENV}='fork': expected one of spawn, forkserver"):
        start_method()
    monkeypatch.delenv(START_METHOD_ENV)
    assert start_method() == ("forkserver" if HAS_FORKSERVER else "spawn")


@linux
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_busy_worker_dies_with_its_sigkilled_driver(method: str, tmp_path: Path) -> None:
    """A fork server's child is the server's, which outlives the driver while children hold it: the
    worker must still see the driver go, take it as SIGTERM and exit."""
    if method == "forkserver" and not HAS_FORKSERVER:
        pytest.skip("no forkserver start method here")
    pidfile = tmp_path / "worker.pid"
    env = {**os.environ, START_METHOD_ENV: method, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-m", "tests.executor_tasks", str(pidfile)], env=env,
                              cwd=ROOT, start_new_session=True)
    try:
        worker = int(_wait_for_file(pidfile))
        driver.kill()
        driver.wait()
        deadline = time.time() + 30
        while process_alive(worker) and time.time() < deadline:
            time.sleep(0.05)
        assert not process_alive(worker), "the worker outlived its driver"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


@needs_forkserver
@linux
def test_a_killed_fork_server_does_not_pass_its_running_tasks_for_dead(monkeypatch, tmp_path: Path) -> None:
    """The server reports its children's exits; once it is gone the executor waits on each child itself."""
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    executor = ProcessExecutor(2, pin=False)
    pidfile = tmp_path / "worker.pid"
    try:
        future = executor.submit(sleep_and_record, str(pidfile), 3.0)
        worker = int(_wait_for_file(pidfile))
        os.kill(_parent(worker), signal.SIGKILL)
        assert future.result(timeout=60) == "slept"
        assert executor.submit(worker_view, "X").result(timeout=300)["loaded"]["torch"]  # a new server
    finally:
        executor.shutdown()


def test_a_preload_module_that_fails_to_import_is_skipped(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "clipscale_test_broken.py").write_text("raise RuntimeError('broken optional module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_modules(["json", "clipscale_test_missing", "clipscale_test_broken"]) == \
        ["clipscale_test_missing", "clipscale_test_broken"]


@needs_forkserver
def test_the_executor_runs_tasks_when_preloading_fails(tmp_path: Path) -> None:
    """A fresh driver whose fork server cannot import its preload still runs tasks (they import what
    they need themselves)."""
    code = textwrap.dedent("""
        import os
        from clipscale.study import executors
        executors.FORKSERVER_PRELOAD = ("clipscale_test_missing",)
        if __name__ == "__main__":
            ex = executors.ProcessExecutor(2, pin=False)
            print(ex.start_method, ex.submit(os.getcwd).result(timeout=120))
            ex.shutdown()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(START_METHOD_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["forkserver", str(tmp_path)], out.stderr


def test_preloading_initialises_no_cuda() -> None:
    """Every CUDA entry point torch offers is watched while the server's modules import: a CUDA context
    in the server would be inherited broken by each child, and CUDA_VISIBLE_DEVICES read too early."""
    code = textwrap.dedent("""
        import torch
        called = []
        def watch(name, fn):
            def wrapped(*a, **k):
                called.append(name)
                return fn(*a, **k)
            return wrapped
        for name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "set_device",
                     "get_device_name", "get_device_properties", "get_device_capability",
                     "is_bf16_supported"):
            setattr(torch.cuda, name, watch(name, getattr(torch.cuda, name)))
        if hasattr(torch._C, "_cuda_getDeviceCount"):
            torch._C._cuda_getDeviceCount = watch("_cuda_getDeviceCount", torch._C._cuda_getDeviceCount)
        from clipscale.study import worker_preload
        assert worker_preload.FAILED == [], worker_preload.FAILED
        print(sorted(set(called)), torch.cuda.is_initialized())
    """)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "False"], out.stdout


IDENTICAL_STUDY = """
[study]
name = "same"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 300

[train]
batch_size = 64
checkpoint_points = [1.0]
workers = 0
threads = 1

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 300
samples_seen = 192

[eval]
suite = "synth"
samples_per_task = 20
batch_size = 64
"""


def _trained(root: Path) -> tuple[list, list, dict]:
    import torch

    from clipscale.io import read_jsonl
    from clipscale.study.grid import plan
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study

    root.mkdir()
    (root / "study.toml").write_text(IDENTICAL_STUDY)
    study = load_study(root / "study.toml")
    assert run_study(study, jobs=2, log=lambda s: None)["finished"] == 1
    (run,) = plan(study)
    steps = [{k: r[k] for k in ("step", "loss", "lr", "logit_scale", "grad_norm")}
             for r in read_jsonl(run.run_dir / "metrics.jsonl")]
    evals = [(r["dataset"], r["metrics"]) for r in read_jsonl(run.run_dir / "results.jsonl")]
    (ckpt,) = (run.run_dir / "checkpoints").glob("*.pt")
    return steps, evals, torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@needs_forkserver
def test_a_run_trained_in_a_forked_worker_is_bit_identical_to_a_spawned_one(tmp_path: Path,
                                                                            monkeypatch) -> None:
    import torch

    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    spawned = _trained(tmp_path / "spawn")
    monkeypatch.setenv(START_METHOD_ENV, "forkserver")
    forked = _trained(tmp_path / "forkserver")
    assert spawned[0] and forked[0] == spawned[0]  # each logged step's loss, lr, logit scale, grad norm
    assert forked[1] == spawned[1] and len(spawned[1]) >= 4
    assert forked[2].keys() == spawned[2].keys()
    assert all(torch.equal(forked[2][k], spawned[2][k]) for k in spawned[2])
