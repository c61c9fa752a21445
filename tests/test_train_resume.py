"""Preemption: SIGTERM mid-run writes latest.pt and exits; `resume auto` continues to the exact
loss sequence of the uninterrupted run (the session fixture, same config)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    from clipscale.errors import ClipscaleError
    from clipscale.train import train

    latest = tiny_trained_run / "checkpoints" / "latest.pt"
    with pytest.raises(ClipscaleError, match=r"the recipe changed: batch_size \(checkpoint 32, now 64\)"):
        train(tiny_config(synth_train_shards, tiny_trained_run.parent / "other", resume=str(latest),
                          batch_size=64))


def _copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_resume_auto_with_a_changed_recipe_is_refused_via_the_cli(
        tiny_trained_run: Path, synth_train_shards: Path, tmp_path: Path) -> None:
    """lr, warmup, schedule, an optimizer setting: one line naming every changed key, exit 2, and
    config.json is not rewritten."""
    out = _copy_run(tiny_trained_run, tmp_path / "run")
    before = (out / "config.json").read_bytes()
    args = [*_cli_args(synth_train_shards, out), "--resume", "auto", "--lr", "0.01", "--warmup", "100",
            "--schedule", "const-cooldown", "--beta2", "0.95"]
    proc = subprocess.run([sys.executable, "-m", "clipscale.cli", "train", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("clipscale: error: "), proc.stderr
    assert "cannot resume: the recipe changed" in proc.stderr
    for key in ("lr (checkpoint 0.002, now 0.01)", "warmup (checkpoint 640, now 100)", "schedule", "beta2"):
        assert key in proc.stderr, key
    assert (out / "config.json").read_bytes() == before


RECIPE_CHANGES = [("precision", "bf16"), ("grad_clip", "1.0"), ("local_loss", "false"), ("cooldown", "0.5"),
                  ("weight_decay", "0.1"), ("eps", "1e-8"), ("checkpoint_points", "0.25,1.0"),
                  ("augment", "openclip")]


@pytest.mark.parametrize(("key", "value"), RECIPE_CHANGES)
def test_each_recipe_key_is_refused_on_resume(tiny_trained_run: Path, synth_train_shards: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture, key: str,
                                              value: str) -> None:
    from clipscale.cli import main

    out = _copy_run(tiny_trained_run, tmp_path / "run")
    before = (out / "config.json").read_bytes()
    args = [*_cli_args(synth_train_shards, out), "--resume", "auto", f"--{key.replace('_', '-')}", value]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the recipe changed: {key} (checkpoint" in err, err
    assert (out / "config.json").read_bytes() == before


def test_resume_auto_allows_operational_keys(tiny_trained_run: Path, synth_train_shards: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from clipscale.cli import main
    from clipscale.train.config import RESUME_OPERATIONAL_KEYS

    assert {"workers", "threads", "progress", "log_every", "keep_latest"} <= set(RESUME_OPERATIONAL_KEYS)
    out = _copy_run(tiny_trained_run, tmp_path / "run")
    args = [*_cli_args(synth_train_shards, out), "--resume", "auto", "--threads", "2", "--log-every", "7",
            "--progress", "false", "--tensorboard", "false", "--keep-latest", "false"]
    assert main(["train", *args]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["log_every"] == 7


AUGMENTED = {"samples_seen": 640, "checkpoint_points": [1.0], "log_every": 1, "augment": "openclip"}


def _stop_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """SIGTERM to this process while step `step` trains: the trainer checkpoints after it and stops."""
    import os
    import signal

    from clipscale.train import loop

    real = loop.step_lr

    def step_lr(k: int, **kw: object) -> float:
        if k == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(k, **kw)
    monkeypatch.setattr(loop, "step_lr", step_lr)


def test_augment_openclip_resumes_identically_and_latest_is_dropped_when_finished(
        synth_train_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crops are drawn from (seed, step, slot): kill + resume gives the uninterrupted run's losses and
    weights bit for bit. An interrupted run keeps latest.pt; a finished one drops it (keep_latest
    false), or keeps it (keep_latest true)."""
    import torch

    from clipscale.models import read_checkpoint
    from clipscale.train import train

    whole = tmp_path / "whole"
    train(tiny_config(synth_train_shards, whole, **AUGMENTED, keep_latest=True))
    assert (whole / "checkpoints" / "latest.pt").is_file()
    plain = tmp_path / "plain"
    train(tiny_config(synth_train_shards, plain, **{**AUGMENTED, "augment": "none"}))
    assert not (plain / "checkpoints" / "latest.pt").exists()
    assert sorted(p.name for p in (plain / "checkpoints").iterdir()) == ["samples_000000000640.pt"]

    split = tmp_path / "split"
    _stop_at(monkeypatch, 7)
    assert train(tiny_config(synth_train_shards, split, **AUGMENTED))["state"] == "interrupted"
    assert read_checkpoint(split / "checkpoints" / "latest.pt")["clipscale"]["step"] == 8
    monkeypatch.undo()
    assert train(tiny_config(synth_train_shards, split, **AUGMENTED, resume="auto"))["state"] == "finished"
    assert not (split / "checkpoints" / "latest.pt").exists()
    before = (split / "metrics.jsonl").read_bytes()  # finished without latest.pt: resume trains nothing
    assert train(tiny_config(synth_train_shards, split, **AUGMENTED, resume="auto"))["steps"] == 20
    assert (split / "metrics.jsonl").read_bytes() == before

    def losses(run: Path) -> list[float]:
        return [r["loss"] for r in read_jsonl(run / "metrics.jsonl")]

    assert len(losses(whole)) == 20 and losses(split) == losses(whole)
    assert losses(plain) != losses(whole)  # the crops changed what was trained on
    final = "checkpoints/samples_000000000640.pt"
    a, b = (read_checkpoint(run / final)["state_dict"] for run in (whole, split))
    assert all(torch.equal(a[k], b[k]) for k in a)
