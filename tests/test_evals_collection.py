"""`clipscale eval --collection FILE.toml`: every checkpoint of several sources in one table, each image
decoded once for the whole collection; metrics equal those of evaluating each source alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from clipscale.cli import main
from clipscale.study.results import ID_COLUMNS
from tests.test_models_foreign import BPE_CONFIG, bpe, write_open_clip_train_run  # noqa: F401


def test_collection_one_table_decoding_once(bpe: dict[str, Any], tmp_path: Path,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from open_clip.push_to_hf_hub import save_for_hf

    import clipscale.evals.embed as embed
    from clipscale.evals import evaluate_checkpoint
    from tests.test_models_foreign import _NoTokenizerFiles

    runs = [write_open_clip_train_run(tmp_path / "logs", name, bpe["model"]) for name in ("run-a", "run-b")]
    save_for_hf(bpe["model"], _NoTokenizerFiles(), BPE_CONFIG, tmp_path / "export")
    (tmp_path / "cfg").mkdir()
    other = {**BPE_CONFIG, "embed_dim": 32}  # an architecture no entry uses: registered all the same
    (tmp_path / "cfg" / "tiny-coll-bpe.json").write_text(json.dumps(other))
    collection = tmp_path / "runs.toml"
    collection.write_text(f"""model_configs = ["cfg/tiny-coll-bpe.json"]
[[entry]]
checkpoint = "logs/run-a"
[[entry]]
checkpoint = "logs/run-b/checkpoints/epoch_[0-9]*.pt"
name = "run-b"
[[entry]]
checkpoint = "local-dir:export"
samples_seen = 1280
[[entry]]
checkpoint = "{bpe['ckpt']}"
name = "clipscale"
""")
    decoded: list[int] = []
    real = embed._decode
    monkeypatch.setattr(embed, "_decode", lambda *a, **k: decoded.append(1) or real(*a, **k))
    out = tmp_path / "table.csv"
    assert main(["eval", "--collection", str(collection), "--suite", str(bpe["suite"]),
                 "--batch-size", "100", "--out", str(out)]) == 0
    from clipscale.models import list_models

    assert "tiny-coll-bpe" in list_models()
    assert len(decoded) == 400  # 200 + 200 images, decoded once for 6 checkpoints of 4 entries
    table = pd.read_csv(out)
    assert list(table.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS)
    assert table.groupby("run_id").size().to_dict() == {"run-a": 4, "run-b": 4, "export": 2, "clipscale": 2}
    assert set(table[table.run_id == "run-a"].samples_seen) == {320, 640}
    assert (table.params_nonemb < table.params / 10).all()  # without the 49408-row token table
    assert table[table.run_id == "run-a"].final.tolist() == [False, False, True, True]
    assert (table[table.run_id == "export"].samples_seen == 1280).all() and table.compute.notna().all()
    reference = evaluate_checkpoint(runs[0] / "checkpoints" / "epoch_2.pt", suite=bpe["suite"],
                                    batch_size=100)
    final = table[(table.run_id == "run-a") & table.final]
    for rec in reference:
        row = final[final.dataset == rec["dataset"]].iloc[0]
        for name, value in rec["metrics"].items():
            assert value is None or row[name] == pytest.approx(value, abs=1e-12)
    # every entry evaluates the same weights: one set of metrics across the table
    assert table.groupby(["dataset"])["acc1"].nunique(dropna=True).max() <= 1


def test_collection_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    for text, expected in (
            ("[[entry]]\ncheckpont = 'x'\n", "unknown key(s) ['checkpont']"),
            ("", "no [[entry]] tables"),
            ("[[entry]]\ncheckpoint = 'missing.pt'\n", "missing.pt: no such checkpoint file"),
            ("[[entry]]\ncheckpoint = 'x.pt'\nsamples_seen = -1\n", "'samples_seen' must be")):
        bad.write_text(text)
        assert main(["eval", "--collection", str(bad), "--suite", "synth", "--data-root", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert main(["eval", "x.pt", "--collection", str(bad), "--suite", "synth", "--data-root", "."]) == 2
    assert "--collection takes no SOURCE" in capsys.readouterr().err



def test_a_bad_entry_costs_only_itself(tmp_path: Path, synth_eval_sets: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_evals_runner import save_tiny

    save_tiny(tmp_path / "good.pt")
    (tmp_path / "torn.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:2048])
    collection = tmp_path / "c.toml"
    collection.write_text('[[entry]]\ncheckpoint = "torn.pt"\n[[entry]]\ncheckpoint = "good.pt"\n')
    out = tmp_path / "table.csv"
    assert main(["eval", "--collection", str(collection), "--suite", "synth",
                 "--data-root", str(synth_eval_sets), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"clipscale: error: {collection}: 1 of 2 checkpoint(s) could not be evaluated; "
                          "the other 1 were evaluated (table written)")
    assert "entry 'torn.pt': " in err and "not a readable checkpoint" in err
    table = pd.read_csv(out)  # the good entry's evaluations are kept
    assert set(table.run_id) == {"good.pt"} and len(table) == 5
