"""Runner, cache and CLI: records, run-dir skipping, cache reuse/invalidation, unreadable images."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from clipscale.cli import main
from clipscale.evals import evaluate_checkpoint, evaluate_run, load_suite
from clipscale.evals.adapters import load_dataset
from clipscale.evals.embed import Embedder, file_sha256
from clipscale.io import read_jsonl
from tests.test_evals_data import cls_samples, make_wds, png_bytes

RECORD_KEYS = {"model", "checkpoint", "checkpoint_hash", "source_format", "gmacs", "samples_seen", "compute",
               "dataset", "task", "metrics", "n_samples", "skipped", "timings"}


def save_tiny(path: Path, seed: int = 0, samples_seen: int = 100) -> Path:
    from clipscale.models import create_model, get_tokenizer, model_config, save_checkpoint

    torch.manual_seed(seed)
    model = create_model("tiny-S0")
    return save_checkpoint(path, model=model, model_name="tiny-S0", model_config=model_config("tiny-S0"),
                           tokenizer=get_tokenizer("tiny-S0"), step=1, samples_seen=samples_seen,
                           compute=samples_seen * 1e-3, gmacs=1e-3)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "samples_000000000100.pt")


def test_trained_run_end_to_end_and_skip(tiny_trained_run: Path, synth_eval_sets: Path,
                                         tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    suite = load_suite("synth", root=synth_eval_sets)
    records = evaluate_run(run, suite=suite, batch_size=64)
    ckpts = sorted((run / "checkpoints").glob("samples_*.pt"))
    assert len(records) == 5 * len(ckpts) >= 10
    stored = list(read_jsonl(run / "results.jsonl"))
    assert stored == json.loads(json.dumps(records, default=float).replace("NaN", "null"))
    for r in records:
        assert set(r) == RECORD_KEYS and r["n_samples"] == 200 and r["skipped"] == 0
        assert r["checkpoint"].startswith("checkpoints/samples_") and r["samples_seen"] > 0
        assert all(v is None or (isinstance(v, float) and 0 <= v <= 1) for v in stored[0]["metrics"].values())
    count = next(r for r in stored if r["dataset"] == "synth_count")
    assert count["metrics"]["acc5"] is None and 0 <= count["metrics"]["acc1"] <= 1  # 4 classes: strict null
    assert "NaN" not in (run / "results.jsonl").read_text()
    seen = {torch.load(c, weights_only=True)["clipscale"]["samples_seen"] for c in ckpts}
    assert {r["samples_seen"] for r in records} == seen
    assert evaluate_run(run, suite=suite) == []  # every (checkpoint, dataset, task) already done
    assert len(list(read_jsonl(run / "results.jsonl"))) == len(records)


def test_eval_text_output_and_a_run_already_evaluated(tiny_trained_run: Path, synth_eval_sets: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Text lines leave out top-5 accuracy where it does not exist (4 classes) instead of printing nan; an
    eval with nothing left to do says so in one stderr line instead of printing nothing."""
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    args = ["eval", str(run), "--suite", "synth", "--data-root", str(synth_eval_sets)]
    assert main(args) == 0
    out = capsys.readouterr().out
    count = [line for line in out.splitlines() if " synth_count " in line]
    assert count and all("acc1 " in line and "acc5" not in line for line in count)
    assert "nan" not in out and "acc5 " in next(line for line in out.splitlines() if " synth_shape " in line)
    n = len(list((run / "checkpoints").glob("samples_*.pt")))
    assert main(args) == 0
    again = capsys.readouterr()
    assert again.out == ""
    results = run / "results.jsonl"
    assert again.err.strip() == (f"{n} checkpoint(s) already evaluated on suite synth ({results}): skipped; "
                                 "to evaluate one again, remove its records from that file")


def test_a_corrupt_checkpoint_of_a_run_is_skipped_and_the_others_evaluated(
        tiny_trained_run: Path, synth_eval_sets: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    first, *rest = sorted((run / "checkpoints").glob("samples_*.pt"))
    first.write_bytes(first.read_bytes()[:4096])  # cut short (disk fault, partial copy)
    args = ["eval", str(run), "--suite", "synth", "--data-root", str(synth_eval_sets),
            "--out", str(tmp_path / "o"), "--json"]  # stdout as JSON lines (text without --json, issue 21)
    assert main(args) == 2
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    head = f"clipscale: error: {run}: 1 of {1 + len(rest)} checkpoint(s) could not be evaluated"
    assert line.startswith(head)
    assert f"{first}: not a readable checkpoint" in line
    stored = list(read_jsonl(run / "results.jsonl"))
    assert {r["checkpoint"] for r in stored} == {f"checkpoints/{c.name}" for c in rest}
    assert len(stored) == 5 * len(rest)  # 5 tasks of each good checkpoint
    assert [json.loads(x) for x in captured.out.splitlines()] == list(read_jsonl(tmp_path / "o")) != []
    assert main(args) == 2  # again: the done ones are not evaluated twice, the bad one is still named
    assert len(list(read_jsonl(run / "results.jsonl"))) == len(stored)


def test_cli_eval_checkpoint_and_errors(tiny_ckpt: Path, synth_eval_sets: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    code = main(["eval", str(tiny_ckpt), "--suite", "synth", "--data-root", str(synth_eval_sets),
                 "--out", str(out), "--batch-size", "50", "--device", "cpu"])
    assert code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["dataset"] for r in lines] == ["synth_shape", "synth_color", "synth_count", "synth_relation",
                                            "synth_retrieval"]
    assert lines[-1]["metrics"].keys() == {f"{d}_retrieval_recall@{k}" for d in ("image", "text")
                                           for k in (1, 5, 10)}
    text = capsys.readouterr().out.splitlines()  # one text line per record; JSON lines with --json
    assert len(text) == 5 and text[0].startswith("tiny-S0 @ ")
    assert " synth_shape zeroshot_classification: acc1 " in text[0]
    assert main(["eval", str(tiny_ckpt), "--suite", "synth", "--data-root", str(synth_eval_sets),
                 "--batch-size", "50", "--json"]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["dataset"], r["metrics"]) for r in printed] == [(r["dataset"], r["metrics"]) for r in lines]
    assert main(["eval", str(tmp_path / "missing.pt"), "--suite", "synth", "--data-root", "x"]) == 2
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err
    assert main(["eval", str(tiny_ckpt), "--suite", "synth"]) == 2


def test_python_api_matches_cli_metrics(tiny_ckpt: Path, synth_eval_sets: Path) -> None:
    suite = load_suite("synth", root=synth_eval_sets)
    a = evaluate_checkpoint(tiny_ckpt, suite=suite, batch_size=7)
    b = evaluate_checkpoint(tiny_ckpt, suite=suite, batch_size=256)
    for ra, rb in zip(a, b):  # batch size changes nothing beyond float noise
        for k, v in ra["metrics"].items():
            w = rb["metrics"][k]
            assert (math.isnan(v) and math.isnan(w)) or math.isclose(v, w, abs_tol=1e-6)


def test_feature_cache_reuse_and_invalidation(tmp_path: Path, synth_eval_sets: Path) -> None:
    from clipscale.models import load_checkpoint

    ds = load_dataset("synth", synth_eval_sets / "synth_shape", name="synth_shape")
    ckpt = save_tiny(tmp_path / "a.pt", seed=1)
    cache = tmp_path / "cache"

    def embedder(path: Path) -> Embedder:
        loaded = load_checkpoint(path)
        return Embedder(loaded.model, loaded.tokenizer, checkpoint_hash=file_sha256(path),
                        model_config=loaded.meta["model_config"], cache_dir=cache)

    first = embedder(ckpt)
    f1 = first.image_features(ds)
    first.image_features(ds)
    assert first.stats == {"image_encodes": 1, "disk_hits": 0, "memory_hits": 1}
    second = embedder(ckpt)  # new process-equivalent: found on disk, not recomputed
    assert torch.equal(second.image_features(ds).features, f1.features)
    assert second.stats["image_encodes"] == 0 and second.stats["disk_hits"] == 1
    save_tiny(ckpt, seed=2)  # same path, different bytes -> different key -> recomputed
    third = embedder(ckpt)
    f3 = third.image_features(ds)
    assert third.stats["image_encodes"] == 1 and not torch.allclose(f3.features, f1.features)


def test_unreadable_images_are_skipped_and_counted(tiny_ckpt: Path, tmp_path: Path) -> None:
    samples = cls_samples([0, 1, 0, 1])
    samples[1]["png"] = b"not a png at all"
    make_wds(tmp_path / "d", samples, classnames=["red", "blue"], templates=["a {c} shape"])
    (tmp_path / "s.toml").write_text('[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\n'
                                     'task = "zeroshot_classification"\n')
    (record,) = evaluate_checkpoint(tiny_ckpt, suite=tmp_path / "s.toml")
    assert record["n_samples"] == 3 and record["skipped"] == 1
    assert record["metrics"]["acc5"] is None or math.isnan(record["metrics"]["acc5"])
    all_bad = [{"png": b"garbage", "cls": b"0"}]
    make_wds(tmp_path / "d", all_bad, classnames=["red", "blue"], templates=["a {c} shape"])
    with pytest.raises(Exception, match="none of the 1 images could be decoded"):
        evaluate_checkpoint(tiny_ckpt, suite=tmp_path / "s.toml")
    assert png_bytes(1)  # helper sanity


def test_trimmed_text_encoding_equals_encode_text() -> None:
    import open_clip

    from clipscale.evals.embed import encode_text_trimmed
    from clipscale.models import create_model, get_tokenizer, ladder_config

    torch.manual_seed(0)
    word = create_model("tiny-S0").eval()
    cfg = ladder_config("tiny-S0")
    cfg["text_cfg"].update(vocab_size=49408, context_length=77)
    bpe = open_clip.model.CLIP(**cfg).eval()
    texts = ["a red circle", "two big striped hearts left of a small dotted triangle", "star"]
    cases = ((word, get_tokenizer("tiny-S0")(texts)), (bpe, open_clip.get_tokenizer("ViT-B-32")(texts)))
    for model, tokens in cases:
        with torch.no_grad():
            assert torch.allclose(encode_text_trimmed(model, tokens), model.encode_text(tokens), atol=1e-5)


def test_eval_cli_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, clipscale.evals.cli; sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_second_checkpoint_decodes_no_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images not at the model's size (8 px for a 32 px model: decode + resize) are decoded once per
    process and preprocessing: separate evaluate_checkpoint calls, as the train eval hook makes one per
    checkpoint, decode nothing the second time, and give the metrics of a fresh decode."""
    from clipscale.evals import embed

    make_wds(tmp_path / "d", cls_samples([0, 1, 0, 1, 1, 0]), classnames=["red", "blue"],
             templates=["a {c} shape"])
    (tmp_path / "s.toml").write_text('[[dataset]]\nname = "d"\nformat = "wds"\npath = "d"\n'
                                     'task = "zeroshot_classification"\n')
    first, second = save_tiny(tmp_path / "a.pt", seed=1), save_tiny(tmp_path / "b.pt", seed=2)
    decoded: list[int] = []
    real = embed._decode
    monkeypatch.setattr(embed, "_decode", lambda *a, **k: decoded.append(1) or real(*a, **k))
    evaluate_checkpoint(first, suite=tmp_path / "s.toml")
    assert len(decoded) == 6
    (record,) = evaluate_checkpoint(second, suite=tmp_path / "s.toml")
    assert len(decoded) == 6  # nothing decoded for the second checkpoint
    monkeypatch.setattr(embed, "_SHARED", None)  # a fresh process
    (fresh,) = evaluate_checkpoint(second, suite=tmp_path / "s.toml")
    assert len(decoded) == 12 and json.dumps(fresh["metrics"]) == json.dumps(record["metrics"])  # nan too


def test_pixel_cache_is_bounded_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipscale.evals import embed

    class Set:  # one image per set; its name is its content fingerprint
        def __init__(self, name: str) -> None:
            self.fingerprint, self.images = name, [name]

    decoded: list[str] = []
    monkeypatch.setattr(embed, "_decode",
                        lambda ref, *a: decoded.append(ref) or ("pil", torch.zeros(3, 4, 4)))
    cache = embed.PixelCache(max_bytes=2 * 3 * 4 * 4 * 4)  # room for two sets of one 3x4x4 float32 image
    for name in ("a", "b", "a", "c", "a", "b"):
        cache.get(Set(name), lambda img: img, "pp")
    assert decoded == ["a", "b", "c", "b"]  # "a" stayed (recently used), "b" was evicted by "c"
