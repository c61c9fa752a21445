"""Preemption: SIGTERM mid-run writes latest.pt and exits; `resume auto` continues to the exact
loss sequence of the uninterrupted run (the session fixture, same config)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from clipscale.io import read_jsonl
from tests.fixtures_train import TINY_RUN, tiny_config


def _cli_args(shards: Path, out: Path) -> list[str]:
    args = ["--train-data", str(shards), "--output-dir", str(out)]
    for key, value in TINY_RUN.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        args += [f"--{key}", text]
    return [*args, "--workers", "1"]  # decode in a worker process: it must survive the signal too


def _wait_for_step(metrics: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()}")
        records = list(read_jsonl(metrics)) if metrics.exists() else []
        if records and records[-1]["step"] >= step:
            return
        time.sleep(0.02)
    raise AssertionError("training did not reach the step in time")


def test_sigterm_then_resume_auto_reproduces_the_uninterrupted_losses(
        tiny_trained_run: Path, synth_train_shards: Path, tmp_path: Path) -> None:
    from clipscale.models import read_checkpoint
    from clipscale.train import train

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "clipscale.cli", "train", *_cli_args(synth_train_shards, out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _wait_for_step(out / "metrics.jsonl", 30, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped = read_checkpoint(out / "checkpoints" / "latest.pt")["clipscale"]["step"]
    assert 30 <= stopped < 200
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["state"], summary["signal"], summary["steps"]) == ("interrupted", "SIGTERM", stopped)

    resumed = train(tiny_config(synth_train_shards, out, resume="auto"))
    assert resumed["state"] == "finished" and resumed["samples_seen"] == 6400
    reference = {r["step"]: r["loss"] for r in read_jsonl(tiny_trained_run / "metrics.jsonl")}
    got = {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl")}
    assert all(step in got for step in reference)
    assert [got[s] for s in reference] == list(reference.values())  # bit-identical, before and after
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl")]
    assert steps == sorted(set(steps))  # no duplicated records after the resume


def test_resume_refuses_a_different_run_definition(tiny_trained_run: Path, synth_train_shards: Path) -> None:
    import pytest

    from clipscale.errors import ClipscaleError
    from clipscale.train import train

    latest = tiny_trained_run / "checkpoints" / "latest.pt"
    with pytest.raises(ClipscaleError, match="cannot resume: checkpoint has batch_size=32"):
        train(tiny_config(synth_train_shards, tiny_trained_run.parent / "other", resume=str(latest),
                          batch_size=64))
