"""NaN/inf weights are never checkpointed (point, latest.pt or signal-time save), and evaluating a
checkpoint that holds them is a one-line error, not chance-level metrics with exit 0."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from clipscale.cli import main
from clipscale.errors import ClipscaleError
from tests.fixtures_train import tiny_config
from tests.test_evals_data import cls_samples, make_wds

SHORT = {"samples_seen": 1600, "checkpoint_points": [0.5, 1.0], "log_every": 5}  # 50 steps, points 25/50


def _poison_at(monkeypatch: pytest.MonkeyPatch, step: int, *, sigterm: bool) -> None:
    """After optimizer step `step` (1-based) one weight becomes NaN; the loss of that step is finite."""
    from clipscale.train import loop
    from clipscale.train.distributed import unwrap

    real, calls = loop.train_step, {"n": 0}

    def poisoned(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        out = real(model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            with torch.no_grad():
                next(unwrap(model).parameters()).view(-1)[0] = float("nan")
            if sigterm:
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: save latest.pt and stop
        return out

    monkeypatch.setattr(loop, "train_step", poisoned)


@pytest.mark.parametrize(("step", "sigterm"), [(50, False), (40, True)], ids=["point", "signal"])
def test_nan_weights_are_never_checkpointed(synth_train_shards: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, step: int,
                                            sigterm: bool) -> None:
    from clipscale.models import read_checkpoint
    from clipscale.models.integrity import nonfinite_parameter_count
    from clipscale.train import train

    _poison_at(monkeypatch, step, sigterm=sigterm)
    out = tmp_path / "run"
    with pytest.raises(ClipscaleError) as info:
        train(tiny_config(synth_train_shards, out, **SHORT))
    msg = str(info.value)
    assert f"weights became nan/inf at or before step {step}" in msg and "\n" not in msg
    latest = out / "checkpoints" / "latest.pt"
    assert f"last good checkpoint: {latest}" in msg
    payload = read_checkpoint(latest)
    assert payload["clipscale"]["step"] == 25  # the good one, not overwritten
    assert nonfinite_parameter_count(payload["state_dict"]) == {}
    assert sorted(p.name for p in (out / "checkpoints").glob("samples_*.pt")) == ["samples_000000000800.pt"]
    assert not (out / "summary.json").exists()

    monkeypatch.undo()  # the good latest.pt resumes (same recipe) to the end
    done = train(tiny_config(synth_train_shards, out, **{**SHORT, "resume": "auto"}))
    assert done["state"] == "finished" and done["steps"] == 50


def _nan_checkpoint(tmp_path: Path) -> Path:
    from clipscale.models import create_model, get_tokenizer, model_config, save_checkpoint

    torch.manual_seed(0)
    model = create_model("tiny-S0")
    with torch.no_grad():
        model.logit_scale.fill_(float("inf"))
        next(model.visual.parameters()).view(-1)[:3] = float("nan")
    path = tmp_path / "run" / "checkpoints" / "samples_000000000100.pt"
    return save_checkpoint(path, model=model, model_name="tiny-S0", model_config=model_config("tiny-S0"),
                           tokenizer=get_tokenizer("tiny-S0"), step=1, samples_seen=100, compute=0.1,
                           gmacs=1e-3)


def test_eval_of_nonfinite_checkpoint_is_a_one_line_error(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from clipscale.evals import evaluate_checkpoint
    from clipscale.models import read_checkpoint
    from clipscale.models.integrity import nonfinite_parameter_count

    ckpt = _nan_checkpoint(tmp_path)
    bad = nonfinite_parameter_count(read_checkpoint(ckpt)["state_dict"])
    assert sum(bad.values()) == 4 and bad["logit_scale"] == 1
    make_wds(tmp_path / "d", cls_samples([0, 1, 0, 1]), classnames=["red", "blue"], templates=["a {c} shape"])
    suite = tmp_path / "s.toml"
    suite.write_text('[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\n'
                     'task = "zeroshot_classification"\n')
    with pytest.raises(ClipscaleError, match="4 non-finite"):
        evaluate_checkpoint(ckpt, suite=suite)
    assert main(["eval", str(ckpt), "--suite", str(suite)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no records
    assert captured.err.count("\n") == 1 and str(ckpt) in captured.err and "nan/inf" in captured.err
    assert main(["eval", str(tmp_path / "run"), "--suite", str(suite)]) == 2  # a run dir's checkpoints too
    assert "nan/inf" in capsys.readouterr().err
    assert not (tmp_path / "run" / "results.jsonl").exists()
