"""Study-level checks of issue 18: eval data_root against the study file, shard data sizes, max_passes,
suite aggregates in the results table, and the extrapolation check of the largest compute group."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipscale.errors import ClipscaleError
from clipscale.study.spec import load_study

STUDY = """
[study]
name = "t"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 4000
samples_seen = 2000
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_eval_data_root_is_relative_to_the_study_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", STUDY + '[eval]\nsuite = "synth"\ndata_root = "evaldata"\n')
    monkeypatch.chdir(tmp_path)
    assert load_study(path).eval_root() == tmp_path / "sub" / "evaldata"
    absolute = _write(tmp_path, STUDY + f'[eval]\ndata_root = "{tmp_path / "abs"}"\n')
    assert load_study(absolute).eval_root() == tmp_path / "abs"


def test_eval_data_root_of_the_wrong_type_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ClipscaleError) as err:
        load_study(_write(tmp_path, STUDY + "[eval]\ndata_root = 5\n"))
    assert str(err.value).startswith(str(tmp_path / "study.toml")) and "[eval] data_root" in str(err.value)
    assert "\n" not in str(err.value) and os.sep in str(err.value)


def _run_dir(root: Path, rid: str, records: list[tuple[int, str, dict]]) -> None:
    from clipscale.io import append_jsonl, atomic_write_json

    d = root / "runs" / rid
    d.mkdir(parents=True)
    atomic_write_json(d / "run.json", {"run_id": rid, "model": "tiny-S0", "mparams": 1.0, "gmacs": 0.01,
                                       "data_size": 4000, "samples_seen": 2000, "distribution": "uniform",
                                       "dataset": "uni", "seed": 0, "compute_group": None})
    for samples, dataset, metrics in records:
        append_jsonl(d / "results.jsonl", {"samples_seen": samples, "dataset": dataset,
                                           "task": "zeroshot_retrieval", "metrics": metrics,
                                           "checkpoint": f"checkpoints/samples_{samples:012d}.pt"})


def test_an_aggregate_is_a_results_row_with_the_mean_of_its_parts(tmp_path: Path) -> None:
    from clipscale.study.results import build_results_table

    (tmp_path / "suite.toml").write_text(
        '[[dataset]]\nname = "a"\nformat = "wds"\npath = "a"\ntask = "zeroshot_retrieval"\n'
        '[[dataset]]\nname = "b"\nformat = "wds"\npath = "b"\ntask = "zeroshot_retrieval"\n'
        '[[aggregate]]\nname = "avg"\nmetric = "image_retrieval_recall@5"\nof = ["a", "b"]\n')
    study = load_study(_write(tmp_path, STUDY + '[eval]\nsuite = "suite.toml"\n'))
    r5 = "image_retrieval_recall@5"
    _run_dir(study.output_dir, "r1", [(1000, "a", {r5: 0.2}), (1000, "b", {r5: 0.4}),
                                      (2000, "a", {r5: 0.3}), (2000, "b", {r5: 0.6})])
    _run_dir(study.output_dir, "r2", [(2000, "a", {r5: 0.5})])  # part b missing: no aggregate row
    df = build_results_table(study, run_ids=["r1", "r2"])
    agg = df[df.dataset == "avg"].sort_values("samples_seen")
    assert list(agg.run_id) == ["r1", "r1"] and list(agg.task) == ["aggregate", "aggregate"]
    assert agg[r5].to_numpy() == pytest.approx([0.3, 0.45])
    assert list(agg.final) == [False, True] and list(agg.compute) == pytest.approx([10.0, 20.0])
    assert len(df) == 7
