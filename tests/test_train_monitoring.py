"""Monitoring: TensorBoard and wandb (offline) mirror metrics.jsonl; progress lines when not a terminal;
a missing tracker package fails before anything is written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from clipscale.errors import ClipscaleError
from tests.fixtures_train import tiny_config

SHORT = {"samples_seen": 640, "checkpoint_points": [1.0]}


def test_tensorboard_mirrors_the_logged_losses(synth_train_shards: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")  # a requirement: present wherever the requirements are installed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clipscale.train import train

    out = tmp_path / "run"
    train(tiny_config(synth_train_shards, out, tensorboard=True, **SHORT))  # the --tensorboard shorthand
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == [r["samples_seen"] for r in logged]
    assert [s.value for s in scalars] == pytest.approx([r["loss"] for r in logged], rel=1e-6)


def test_wandb_offline_run_records_the_metrics(synth_train_shards: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")  # optional extra; in the dev requirements so CI runs this
    from clipscale.train import train

    monkeypatch.delenv("WANDB_MODE", raising=False)  # clipscale must pick offline by itself
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(tiny_config(synth_train_shards, out, report_to=["wandb"], **SHORT))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir())  # offline: nothing was sent anywhere
    # the run's record file (what `wandb sync` uploads) holds every logged loss as wandb's JSON value;
    # wandb-core writes it, so its bytes are read rather than a reader of its format
    recorded = next(runs[0].glob("run-*.wandb")).read_bytes()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert b"train/loss" in recorded and len(logged) == 2
    for record in logged:
        assert json.dumps(record["loss"]).encode() in recorded, record


def test_missing_tracker_fails_before_the_run_directory_is_made(synth_train_shards: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from clipscale.train import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "run"
    with pytest.raises(ClipscaleError, match=r"report_to.*'wandb' package, which is not installed"):
        train(tiny_config(synth_train_shards, out, report_to=["wandb"], **SHORT))
    assert not out.exists()


def test_report_to_is_validated_and_operational(tmp_path: Path) -> None:
    from clipscale.study.spec import OPERATIONAL_KEYS
    from clipscale.train.config import RESUME_OPERATIONAL_KEYS, load_train_config

    with pytest.raises(ClipscaleError, match=r"'report_to': expected one of tensorboard, wandb"):
        load_train_config(None, {"train_data": "x.tar", "report_to": "tensorboard,mlflow"})
    config = load_train_config(None, {"train_data": "x.tar", "report_to": "wandb,tensorboard"})
    assert config.report_to == ["tensorboard", "wandb"]
    assert "report_to" in OPERATIONAL_KEYS and "report_to" in RESUME_OPERATIONAL_KEYS


def test_progress_lines_when_stderr_is_not_a_terminal(synth_train_shards: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from clipscale.train import train

    assert not sys.stderr.isatty()
    train(tiny_config(synth_train_shards, tmp_path / "run", progress=True, **SHORT))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("run: ")]
    assert lines, "no progress line"
    assert lines[-1].startswith("run: 640/640 samples (100%), ")
    assert "samples/s, loss " in lines[-1] and "ETA 0m00s" in lines[-1]
