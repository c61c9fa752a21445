"""`clipscale import`: open_clip_train run folders -> clipscale run dirs whose metrics equal those of the
same weights saved by clipscale; CLIP_benchmark result JSONs -> one tidy table `clipscale fit` reads;
imports into a study appear in its results table; unknown compute stays null (with a warning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from clipscale.cli import main
from clipscale.study.results import ID_COLUMNS
from tests.test_models_foreign import BPE_NAME, bpe, write_open_clip_train_run  # noqa: F401 (fixture)

# CLIP_benchmark's `clip_benchmark eval --output` JSON: one file per model x dataset
BENCH = [  # (model, pretrained, acc1)
    ("ViT-B-32", "laion400m_s13b_b51k", 0.60), ("ViT-B-16", "laion400m_s13b_b51k", 0.66),
    ("ViT-M-32", "laion2b_s32b_b82k", 0.75), ("ViT-S-32", "laion2b_s34b_b79k", 0.58),
    ("ViT-B-32", "openai", 0.63),
]


def write_clip_benchmark(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for model, pretrained, acc1 in BENCH:
        for dataset, task, metrics in (
                ("imagenet1k", "zeroshot_classification",
                 {"acc1": acc1, "acc5": acc1 + 0.2, "mean_per_class_recall": acc1 - 0.01}),
                ("mscoco_captions", "zeroshot_retrieval",
                 {"image_retrieval_recall@5": acc1 - 0.1, "text_retrieval_recall@5": acc1})):
            doc = {"dataset": dataset, "model": model, "pretrained": pretrained, "task": task,
                   "metrics": metrics, "language": "en"}
            (directory / f"{dataset}_{pretrained}_{model}_en_{task}.json").write_text(json.dumps(doc))
    return directory


def test_open_clip_train_run_imports_to_equal_metrics(bpe: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    from clipscale.evals import evaluate_checkpoint, evaluate_run
    from clipscale.models import load_checkpoint

    run = write_open_clip_train_run(tmp_path / "logs", "run-a", bpe["model"])
    assert main(["import", str(run), "--out", str(tmp_path / "mine")]) == 0
    (imported,) = (tmp_path / "mine" / "runs").iterdir()
    ckpts = sorted(p.name for p in (imported / "checkpoints").iterdir())
    assert ckpts == ["samples_000000000320.pt", "samples_000000000640.pt"]
    cell = json.loads((imported / "run.json").read_text())
    assert (cell["model"], cell["samples_seen"], cell["source_format"]) == (BPE_NAME, 640, "open_clip_train")
    assert cell["train"]["batch_size"] == 64  # 32 per GPU x world size 2
    from clipscale.models import count_flops

    assert cell["mparams_nonemb"] == pytest.approx(count_flops(BPE_NAME).mparams_nonemb)
    assert cell["mparams_nonemb"] < cell["mparams"] / 10  # a 49408-row token table dwarfs the towers
    loaded = load_checkpoint(imported / "checkpoints" / ckpts[-1])
    assert loaded.meta["source_format"] == "open_clip_train" and loaded.meta["step"] == 6
    assert "optimizer" not in torch.load(imported / "checkpoints" / ckpts[-1], weights_only=True)
    records = evaluate_run(imported, suite=bpe["suite"], batch_size=100)
    reference = evaluate_checkpoint(bpe["ckpt"], suite=bpe["suite"], batch_size=100)
    final = [r for r in records if r["samples_seen"] == 640]
    assert [r["metrics"] for r in final] == [r["metrics"] for r in reference]
    # importing again keeps the checkpoints and rebuilds the table with the evaluations
    assert main(["import", str(run), "--out", str(tmp_path / "mine")]) == 0
    table = pd.read_csv(tmp_path / "mine" / "results.csv")
    assert list(table.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS) and len(table) == 4
    assert set(table.samples_seen) == {320, 640} and table.compute.notna().all()


def test_clip_benchmark_folder_to_table_fit_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from clipscale.models import count_flops

    bench = write_clip_benchmark(tmp_path / "bench")
    assert main(["import", str(bench), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    metrics = ["acc1", "acc5", "image_retrieval_recall@5", "mean_per_class_recall", "text_retrieval_recall@5"]
    assert list(table.columns) == [*ID_COLUMNS, *metrics] and len(table) == 2 * len(BENCH)
    row = table[(table.model == "ViT-M-32") & (table.dataset == "imagenet1k")].iloc[0]
    assert row.samples_seen == 32e9 and row.acc1 == 0.75  # the tag's s32b
    assert row.compute == pytest.approx(count_flops("ViT-M-32").gmacs * 32e9)
    assert row.distribution == "laion2b" and row.gmacs == pytest.approx(count_flops("ViT-M-32").gmacs)
    openai = table[table.checkpoint == "openai"]
    assert openai.samples_seen.isna().all() and openai.compute.isna().all()  # unknown: null, not guessed
    assert "samples seen unknown" in caplog.text
    capsys.readouterr()
    code = main(["fit", str(tmp_path / "out" / "results.csv"), "--law", "power", "--C", "compute",
                 "--y", "acc1", "--error", "--where", "dataset == 'imagenet1k' and compute > 0", "--json"])
    assert code == 0
    fit = json.loads(capsys.readouterr().out)["fits"][0]
    assert fit["n_points"] == 4 and fit["params"]["alpha"] < 0  # the four rows with known compute


def test_a_folder_import_skips_and_counts_files_that_are_not_results(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bench = write_clip_benchmark(tmp_path / "bench")
    good = sorted(bench.rglob("*.json"))
    torn = good[0].read_text()[:40]  # a result cut short by an interrupted benchmark
    (bench / "torn.json").write_text(torn)
    (bench / "notes.json").write_text(json.dumps({"comment": "not a result"}))
    assert main(["import", str(bench), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(table) == len(good)  # every real result imported
    assert f"skipped 2 of {len(good) + 2} JSON file(s) that are not CLIP_benchmark results" in caplog.text


def test_import_into_study_appears_in_results(tmp_path: Path) -> None:
    from clipscale.study import build_results_table, load_study

    study = tmp_path / "s.toml"
    study.write_text("""[study]
name = "s"
[datasets.syn]
synth = "uniform"
samples = 100
[[grid]]
model = "tiny-S0"
dataset = "syn"
data_size = 100
samples_seen = 100
""")
    bench = write_clip_benchmark(tmp_path / "bench")
    assert main(["import", str(bench / "imagenet1k_openai_ViT-B-32_en_zeroshot_classification.json"),
                 str(bench), "--out", str(study)]) == 0
    df = build_results_table(load_study(study))
    assert len(df) == 2 * len(BENCH) and set(df.model) == {m for m, _, _ in BENCH}
    assert json.loads((tmp_path / "s" / "imported.json").read_text())["runs"]


def test_import_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text(json.dumps({"model": "ViT-B-32", "metrics": {}}))
    assert main(["import", str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad: none of its 1 JSON file(s) is a CLIP_benchmark result" in err and err.count("\n") == 1
    assert "x.json: not a CLIP_benchmark result: no key 'dataset'" in err
    named = tmp_path / "bad" / "x.json"  # a file named on its own must be a result
    assert main(["import", str(named), "--out", str(tmp_path / "o")]) == 2
    assert "x.json: not a CLIP_benchmark result: no key 'dataset'" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_study_model_configs_register_and_reach_every_run(tmp_path: Path) -> None:
    from clipscale.study import load_study, plan
    from tests.test_models_foreign import BPE_CONFIG

    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "tiny-study-bpe.json").write_text(json.dumps(BPE_CONFIG))
    text = """[study]
name = "s"
model_configs = ["arch/tiny-study-bpe.json"]
[datasets.syn]
synth = "uniform"
samples = 100
[[grid]]
model = ["tiny-S0", "tiny-study-bpe"]
dataset = "syn"
data_size = 100
samples_seen = 100
[[rules]]
when = {model = "tiny-study-bpe"}
set = {lr = 1e-3}
"""
    (tmp_path / "s.toml").write_text(text)
    runs = plan(load_study(tmp_path / "s.toml"))
    bpe_run = next(r for r in runs if r.model == "tiny-study-bpe")
    assert bpe_run.train["model_configs"] == [str(tmp_path / "arch" / "tiny-study-bpe.json")]
    assert bpe_run.gmacs > 0
    moved = tmp_path / "moved"  # the config's location is not part of the run id
    (moved / "arch").mkdir(parents=True)
    (moved / "arch" / "tiny-study-bpe.json").write_text(json.dumps(BPE_CONFIG))
    (moved / "s.toml").write_text(text)
    assert [r.run_id for r in plan(load_study(moved / "s.toml"))] == [r.run_id for r in runs]
    (tmp_path / "s.toml").write_text(text.replace('"arch/tiny-study-bpe.json"', "3"))
    with pytest.raises(Exception, match=r"\[study\] model_configs"):
        load_study(tmp_path / "s.toml")


def test_real_open_clip_train_run(bpe: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    """open_clip_train's own main() (its synthetic dataset, one epoch of 2 steps) writes the run folder;
    imported, it evaluates exactly like its final weights saved as a clipscale checkpoint."""
    import subprocess
    import sys

    from clipscale.evals import evaluate_checkpoint, evaluate_run
    from clipscale.models.registry import build_from_config
    from tests.test_models_foreign import BPE_CONFIG, save_as_clipscale

    script = ("import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
              "from open_clip_train.main import main; main(sys.argv[2:])")
    argv = ["--model", BPE_NAME, "--dataset-type", "synthetic", "--train-num-samples", "32", "--batch-size",
            "16", "--epochs", "1", "--workers", "0", "--logs", str(tmp_path / "logs"), "--name", "real",
            "--precision", "fp32", "--lr", "1e-3", "--warmup", "1", "--seed", "0"]
    subprocess.run([sys.executable, "-c", script, str(bpe["config"]), *argv], check=True, capture_output=True)
    run = tmp_path / "logs" / "real"
    assert main(["import", str(run), "--out", str(tmp_path / "mine")]) == 0
    (imported,) = (tmp_path / "mine" / "runs").iterdir()
    records = evaluate_run(imported, suite=bpe["suite"], batch_size=100)
    payload = torch.load(run / "checkpoints" / "epoch_1.pt", weights_only=True)
    model = build_from_config(BPE_NAME, BPE_CONFIG)
    model.load_state_dict(payload["state_dict"])
    reference = evaluate_checkpoint(save_as_clipscale(tmp_path / "ref.pt", model, BPE_NAME, BPE_CONFIG),
                                    suite=bpe["suite"], batch_size=100)
    assert [r["metrics"] for r in records] == [r["metrics"] for r in reference]
    assert {r["samples_seen"] for r in records} == {32}  # train_num_samples x 1 epoch
    assert records[0]["compute"] == pytest.approx(32 * records[0]["gmacs"])
