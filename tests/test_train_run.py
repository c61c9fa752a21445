"""End-to-end tiny training: run directory contract, learning, open_clip compatibility, faults."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from clipscale.errors import ClipscaleError
from clipscale.io import read_jsonl
from tests.fixtures_train import TINY_RUN, tiny_config

METRIC_KEYS = {"step", "samples_seen", "compute", "loss", "lr", "logit_scale", "samples_per_s",
               "data_wait_frac", "skipped_samples"}


def test_run_directory_follows_the_contract(tiny_trained_run: Path) -> None:
    run = tiny_trained_run
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "tiny-S0" and config["lr"] == TINY_RUN["lr"]
    assert (run / "open_clip_config" / "tiny-S0.json").is_file()
    records = list(read_jsonl(run / "metrics.jsonl"))
    assert records and all(set(r) >= METRIC_KEYS for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["state"], summary["samples_seen"], summary["skipped_samples"]) == ("finished", 6400, 0)
    assert math.isclose(summary["compute"], summary["gmacs"] * 6400)
    assert records[-1]["samples_seen"] == 6400 and math.isclose(records[-1]["compute"], summary["compute"])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["latest.pt", "samples_000000003200.pt", "samples_000000006400.pt"]
    scales = [r["logit_scale"] for r in records]
    assert all(0 < s <= 100.0 + 1e-4 for s in scales)
    # the last step (200 of 200, 32 samples each) trains at the cosine's value at 199 batches seen
    last = 0.5 * (1 + math.cos(math.pi * (199 * 32 - 640) / (6400 - 640))) * TINY_RUN["lr"]
    assert records[0]["lr"] < TINY_RUN["lr"] and records[-1]["lr"] == pytest.approx(last) and last > 0


def test_loss_decreases_and_zero_shot_beats_chance(tiny_trained_run: Path, synth_eval_sets: Path) -> None:
    from clipscale.data.loader import decode_image
    from clipscale.data.synth import iter_shard_samples
    from clipscale.models import load_checkpoint
    from clipscale.train.session import OPENAI_MEAN, OPENAI_STD

    losses = [r["loss"] for r in read_jsonl(tiny_trained_run / "metrics.jsonl")]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    ck = load_checkpoint(tiny_trained_run / "checkpoints" / "samples_000000006400.pt")
    task = synth_eval_sets / "synth_color"
    classes = (task / "classnames.txt").read_text().split("\n")
    classes = [c for c in classes if c]
    templates = [t for t in (task / "zeroshot_classification_templates.txt").read_text().split("\n") if t]
    samples = list(iter_shard_samples(task / "test" / "0.tar"))
    images = torch.stack([decode_image(s["png"], 32) for s in samples]).float()
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    images = (images / 255 - mean) / std
    labels = torch.tensor([int(s["cls"]) for s in samples])
    with torch.no_grad():
        img = torch.nn.functional.normalize(ck.model.encode_image(images), dim=-1)
        weights = []
        for c in classes:
            tokens = ck.tokenizer([t.format(c=c) for t in templates])
            emb = torch.nn.functional.normalize(ck.model.encode_text(tokens), dim=-1).mean(0)
            weights.append(emb / emb.norm())
        acc = ((img @ torch.stack(weights).T).argmax(1) == labels).float().mean().item()
    assert acc > 2.0 / len(classes), acc  # chance is 1/len(classes)


def test_checkpoint_loads_in_plain_open_clip(tiny_trained_run: Path) -> None:
    import open_clip

    path = tiny_trained_run / "checkpoints" / "samples_000000006400.pt"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    open_clip.add_model_config(tiny_trained_run / "open_clip_config" / "tiny-S0.json")
    model, _, _ = open_clip.create_model_and_transforms("tiny-S0", pretrained=str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, payload["state_dict"][name]), name
    assert payload["clipscale"]["samples_seen"] == 6400 and "optimizer" not in payload


def test_nan_loss_stops_with_one_error_and_keeps_the_last_good_checkpoint(
        synth_train_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipscale.models import read_checkpoint
    from clipscale.train import loop, train

    real = loop.step_lr
    monkeypatch.setattr(loop, "step_lr", lambda step, **kw: 1e38 if step > 10 else real(step, **kw))
    cfg = tiny_config(synth_train_shards, tmp_path / "run", samples_seen=640, checkpoint_points=[0.25])
    with pytest.raises(ClipscaleError, match=r"nan/inf.*last good checkpoint") as info:
        train(cfg)
    assert "\n" not in str(info.value)
    payload = read_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert payload["clipscale"]["step"] == 5
    assert all(torch.isfinite(t).all() for t in payload["state_dict"].values())
    assert not (tmp_path / "run" / "summary.json").exists()


def test_unknown_model_and_bad_data_are_clear_errors(synth_train_shards: Path, tmp_path: Path) -> None:
    from clipscale.train import train
    from clipscale.train.distributed import DistEnv, check_batch

    with pytest.raises(ClipscaleError, match="unknown model 'tiny-S9'; did you mean tiny-S0"):
        train(tiny_config(synth_train_shards, tmp_path / "a", model="tiny-S9"))
    with pytest.raises(ClipscaleError, match="matches no files"):
        train(tiny_config(tmp_path / "nothing-*.tar", tmp_path / "b"))
    with pytest.raises(ClipscaleError, match="data_size 5000 exceeds"):
        train(tiny_config(synth_train_shards, tmp_path / "c", data_size=5000))
    with pytest.raises(ClipscaleError, match="'batch_size': 33 is not divisible by the world size 2"):
        check_batch(33, DistEnv(rank=0, world_size=2, local_rank=0, device=torch.device("cpu")))
    with pytest.raises(ClipscaleError, match=r"'precision': 'amp'.*CUDA"):
        train(tiny_config(synth_train_shards, tmp_path / "d", precision="amp", device="cpu"))


def test_corrupt_samples_are_skipped_and_counted_in_a_run(synth_train_shards: Path, tmp_path: Path) -> None:
    from clipscale.train import train
    from tests.test_train_data import write_bad_shards

    bad = write_bad_shards(synth_train_shards / "00000.tar", tmp_path / "bad")
    summary = train(tiny_config(bad, tmp_path / "run", samples_seen=64, batch_size=16, log_every=1))
    assert summary["state"] == "finished"
    assert summary["skipped"] == {"incomplete_samples": 1, "empty_shards": 1, "unreadable_shards": 0,
                                  "corrupt_samples": 4}  # 2 undecodable samples x 2 passes
    assert summary["skipped_samples"] == 5
    assert list(read_jsonl(tmp_path / "run" / "metrics.jsonl"))[-1]["skipped_samples"] == 5


def test_gpu_path_flags_run_on_cpu(synth_train_shards: Path, tmp_path: Path) -> None:
    """bf16 autocast, grad checkpointing, torch.compile (eager backend: no C++ build in CI), local loss,
    const-cooldown and a data-loader worker process all go through the same loop."""
    from clipscale.models import read_checkpoint
    from clipscale.train import train

    cfg = tiny_config(synth_train_shards, tmp_path / "run", samples_seen=48, batch_size=16, precision="bf16",
                      grad_checkpointing=True, compile=True, compile_backend="eager", local_loss=True,
                      schedule="const-cooldown", workers=1, grad_clip=1.0, log_every=1)
    summary = train(cfg)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert summary["state"] == "finished" and len(losses) == 3 and all(math.isfinite(x) for x in losses)
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "samples_000000000048.pt")["state_dict"]
    assert "logit_scale" in state and not any(k.startswith(("_orig_mod", "module")) for k in state)


def test_eval_hook_writes_results_and_is_optional(tiny_trained_run: Path, synth_eval_sets: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training with eval_suite evaluates each checkpoint point into results.jsonl; without the
    eval stage the hook is a no-op."""
    import shutil

    from clipscale.train.evalhook import run_eval_hook

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    suite = tmp_path / "suite.toml"
    suite.write_text(f'[[dataset]]\nname = "synth_color"\nformat = "wds"\n'
                     f'path = "{synth_eval_sets / "synth_color"}"\ntask = "zeroshot_classification"\n')
    ckpt = run / "checkpoints" / "samples_000000006400.pt"
    records = run_eval_hook(ckpt, suite=str(suite), data_root=None, run_dir=run)
    assert records, "the eval stage returned no records"
    saved = list(read_jsonl(run / "results.jsonl"))
    assert [r["checkpoint"] for r in saved] == ["checkpoints/samples_000000006400.pt"]
    assert saved[0]["samples_seen"] == 6400 and saved[0]["metrics"]["acc1"] > 0.2
    monkeypatch.setitem(sys.modules, "clipscale.evals", types.SimpleNamespace())
    assert run_eval_hook(ckpt, suite=str(suite), data_root=None, run_dir=run) is None


def test_resume_auto_on_a_finished_run_trains_nothing_more(tiny_trained_run: Path, synth_train_shards: Path,
                                                          tmp_path: Path) -> None:
    import shutil

    from clipscale.train import train

    copy = tmp_path / "copy"
    shutil.copytree(tiny_trained_run, copy)
    before = (copy / "metrics.jsonl").read_text()
    summary = train(tiny_config(synth_train_shards, copy, resume="auto"))
    assert summary["state"] == "finished" and summary["samples_seen"] == 6400
    assert (copy / "metrics.jsonl").read_text() == before


def test_cli_trains_from_toml_with_overrides_and_reports_errors(
        synth_train_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clipscale.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(f'model = "tiny-S0"\ntrain_data = "{synth_train_shards}"\n'
                   f'output_dir = "{tmp_path / "run"}"\n'
                   "samples_seen = 100000\nbatch_size = 16\nthreads = 1\nworkers = 0\nprogress = false\n")
    assert main(["train", str(cfg), "--samples-seen", "32", "--checkpoint-points", "1.0"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["samples_seen"] == 32 and summary["checkpoints"] == ["samples_000000000032.pt"]
    assert main(["train", str(cfg), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("clipscale: error: train config field 'batch_size'")


def test_config_json_reloads_as_the_same_config(tiny_trained_run: Path) -> None:
    from clipscale.train import TrainConfig

    saved = json.loads((tiny_trained_run / "config.json").read_text())
    assert TrainConfig(**saved).to_dict() == saved


def test_standalone_train_removes_a_killed_writers_temporaries(synth_train_shards: Path,
                                                               tmp_path: Path) -> None:
    """`clipscale train` outside a study: `.NAME.*.tmp` files a kill left behind are gone once a session
    starts; the user's own files (`notes.tmp`) stay."""
    from clipscale.train import train

    run = tmp_path / "run"
    stale = [run / ".summary.json.ab12cd.tmp", run / "checkpoints" / ".latest.pt.x9y8z7.tmp",
             run / "open_clip_config" / ".tiny-S0.json.q1w2e3.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    (run / "notes.tmp").write_text("mine")
    (run / "checkpoints" / "notes.tmp").write_text("mine too")
    summary = train(tiny_config(synth_train_shards, run, samples_seen=32, batch_size=16,
                                checkpoint_points=[1.0]))
    assert summary["state"] == "finished"
    assert not [p for p in stale if p.exists()]
    assert (run / "notes.tmp").read_text() == "mine" and (run / "checkpoints" / "notes.tmp").is_file()


def test_train_refuses_an_output_dir_holding_a_run_of_another_config(
        synth_train_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tour 3 #1: a second `clipscale train` of another model or size into the same directory replaced the
    finished run's checkpoints, config.json, metrics and summary in place, silently. Now it is one
    exit-2 line naming the directory and what it holds, before anything is written, whatever --resume
    says; the same config still resumes (here: a finished run trains nothing more)."""
    from clipscale.cli import main

    run = tmp_path / "run"
    base = ["train", "--train-data", str(synth_train_shards), "--output-dir", str(run),
            "--samples-seen", "32", "--batch-size", "16", "--checkpoint-points", "1.0", "--threads", "1",
            "--workers", "0", "--progress", "false"]
    assert main(base) == 0
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    changes = (["--model", "tiny-S1"], ["--samples-seen", "64"], ["--model", "tiny-S1", "--resume", "none"])
    for change in changes:
        assert main([*base, *change]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"clipscale: error: {run} holds a finished run of "
                                                       "tiny-S0 (32 samples seen) of another config ("), err
        assert "another --output-dir" in err and f"delete {run}" in err
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files  # nothing touched
    assert "model 'tiny-S0' there, 'tiny-S1' now" in err
    assert main([*base, "--log-every", "3"]) == 0  # same recipe (an operational key changed): resumes
    assert (run / "checkpoints" / "samples_000000000032.pt").read_bytes() == files[
        run / "checkpoints" / "samples_000000000032.pt"]


def test_cli_train_warns_when_samples_seen_is_rounded_to_whole_batches(
        synth_train_shards: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Tour 3 #22: `train --samples-seen 40 --batch-size 16` trained 48 without a word, where a study plans
    the rounded value with a warning."""
    from clipscale.cli import main

    argv = ["train", "--train-data", str(synth_train_shards), "--output-dir", str(tmp_path / "run"),
            "--samples-seen", "40", "--batch-size", "16", "--checkpoint-points", "1.0", "--threads", "1",
            "--workers", "0", "--progress", "false"]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["train config field 'samples_seen': 40 is not a whole number of batches "
                      "(batch_size 16); trained as 48 (3 steps)"]
    assert "finished: tiny-S0, 48 samples seen" in capsys.readouterr().out
