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


FIT_STUDY = """
[study]
name = "f"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 50000

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 50000
samples_seen = 2000

[fit]
metrics = ["image_retrieval_recall@5"]
laws = ["power"]
bootstrap = 100
"""
SIZES = {"S0": (0.03, 0.01), "S1": (0.2, 0.05), "S2": (0.6, 0.13)}  # model: (M params, GMACs)
BUDGETS = (16.0, 32.0, 64.0, 128.0, 256.0)


def _demo_table(*, off: float = 1.0, noise: float = 0.01, repeated: bool = True):
    """A demo-shaped results table: 3 sizes x 5 compute groups of E = 0.9 C^-0.1 (the best size at each
    budget) with log-normal scatter; the largest group's errors times `off`; 2 runs over 50 passes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for budget in BUDGETS:
        for i, (model, (params, gmacs)) in enumerate(SIZES.items()):
            error = 0.9 * budget**-0.1 * (1 + 0.04 * abs(i - 1)) * np.exp(rng.normal(0, noise))
            error *= off if budget == BUDGETS[-1] else 1.0
            rows.append({"run_id": f"{model}-{budget:g}", "model": model, "params": params,
                         "params_nonemb": params, "gmacs": gmacs,
                         "data_size": 50000, "samples_seen": round(budget / gmacs), "compute": budget,
                         "distribution": "uniform", "dataset": "synth_retrieval",
                         "task": "zeroshot_retrieval", "final": True, "compute_group": budget,
                         "image_retrieval_recall@5": 1 - error})
    if repeated:  # data-constrained: 600 unique samples seen ~51 times, far off the law
        for model in ("S0", "S1"):
            rows.append({**rows[0], "run_id": f"{model}-rep", "model": model, "data_size": 600,
                         "samples_seen": 30720, "compute": 30720 * SIZES[model][1], "compute_group": None,
                         "image_retrieval_recall@5": 0.05})
    return pd.DataFrame(rows)


def _fit_study(tmp_path: Path, extra: str = "", laws: str = '["power"]') -> object:
    return load_study(_write(tmp_path, FIT_STUDY.replace('laws = ["power"]', f"laws = {laws}") + extra))


def test_max_passes_leaves_out_repeated_runs_and_says_how_many(tmp_path: Path) -> None:
    from clipscale.report.analysis import left_out_text
    from clipscale.study.pipeline import fit_stage

    df = _demo_table()
    doc = fit_stage(_fit_study(tmp_path), df)
    assert doc["left_out"]["runs"] == 2 and doc["left_out"]["of"] == 17
    assert doc["fits"][0]["n_points"] == 15
    assert "2 of 17 runs left out" in left_out_text(doc["left_out"])
    kept = fit_stage(_fit_study(tmp_path, "max_passes = 60\n"), df)  # 51 passes: kept
    assert kept["fits"][0]["n_points"] == 17 and kept["left_out"]["runs"] == 0
    everything = fit_stage(load_study(_write(tmp_path, FIT_STUDY.replace(
        "bootstrap = 100", 'bootstrap = 100\nconstrained = "include"'))), df)
    assert everything["fits"][0]["n_points"] == 17 and everything["settings"]["max_passes"] is None
    assert "0 of 17 runs left out" in left_out_text(everything["left_out"])


def test_max_passes_is_validated(tmp_path: Path) -> None:
    for bad, words in (("max_passes = 0", "max_passes"), ("max_passes = nan", "max_passes"),
                       ('max_passes = 5\nconstrained = "include"', "set max_passes only"),
                       ('constrained = "sometimes"', "constrained")):
        with pytest.raises(ClipscaleError, match=words) as err:
            load_study(_write(tmp_path, FIT_STUDY + bad + "\n"))
        assert str(err.value).startswith(str(tmp_path / "study.toml")) and "[fit]" in str(err.value)


def test_clipscale_fit_with_the_studys_settings_reproduces_its_law(tmp_path: Path, capsys) -> None:
    import json

    from clipscale.cli import main
    from clipscale.study.pipeline import fit_stage

    df = _demo_table()
    study = _fit_study(tmp_path, laws='["frontier"]')
    entry = fit_stage(study, df)["fits"][0]
    df.to_csv(tmp_path / "results.csv", index=False)
    args = ["fit", str(tmp_path / "results.csv"), "--law", "frontier", "--C", "compute", "--y",
            "image_retrieval_recall@5", "--error", "--where", "final and dataset == 'synth_retrieval'",
            "--by", "distribution", "--run", "run_id", "--bootstrap", "100"]
    capsys.readouterr()
    assert main([*args, "--max-passes", "10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (fit,) = doc["fits"]
    assert fit["params"] == pytest.approx(entry["params"], rel=1e-9) and fit["n_points"] == entry["n_points"]
    assert doc["passes"]["left_out_rows"] == 2
    assert main([*args, "--max-passes", "10"]) == 0
    assert "left out 2 of 17 rows with more than 10 passes" in capsys.readouterr().out
    assert main(args) == 0  # without --max-passes: the repeats are said, and the law differs
    out = capsys.readouterr().out
    assert "2 of 17 rows repeat their unique data" in out
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"][0]["n_points"] == 17
    df.drop(columns=["data_size"]).to_csv(tmp_path / "bare.csv", index=False)
    assert main(["fit", str(tmp_path / "bare.csv"), *args[2:], "--max-passes", "10"]) == 2
    err = capsys.readouterr().err
    assert "--max-passes needs" in err and "data_size" in err and len(err.splitlines()) == 1


def _check(doc: dict) -> dict:
    return doc["fits"][0]["extrapolation_check"]


def test_a_clean_power_law_predicts_its_largest_group(tmp_path: Path) -> None:
    import numpy as np

    from clipscale.study.pipeline import fit_stage

    df = _demo_table()
    check = _check(fit_stage(_fit_study(tmp_path), df))
    assert check["verdict"] == "held" and check["group_compute"] == 256.0 and len(check["runs"]) == 3
    assert check["n_runs"] == 12 and check["ci_low"] < check["predicted"] < check["ci_high"]
    top = 1 - df[df.compute_group == 256.0]["image_retrieval_recall@5"]
    assert check["measured"] == pytest.approx(float(np.exp(np.log(top).mean())), rel=1e-9)  # their geomean
    frontier = _check(fit_stage(_fit_study(tmp_path, laws='["frontier"]'), df))
    assert frontier["verdict"] == "held" and frontier["measured"] == pytest.approx(top.min(), rel=1e-9)


def test_a_largest_group_far_off_the_law_is_missed(tmp_path: Path) -> None:
    from clipscale.study.pipeline import fit_stage

    for laws in ('["power"]', '["frontier"]'):
        check = _check(fit_stage(_fit_study(tmp_path, laws=laws), _demo_table(off=1.3)))
        assert check["verdict"] == "missed" and check["measured"] > check["ci_high"]


def test_check_largest_false_leaves_it_out_and_too_few_runs_say_why(tmp_path: Path) -> None:
    from clipscale.study.extrapolation import describe
    from clipscale.study.pipeline import fit_stage

    entry = fit_stage(_fit_study(tmp_path, "check_largest = false\n"), _demo_table())["fits"][0]
    assert "extrapolation_check" not in entry and describe(entry) is None
    few = _demo_table()
    few = few[few.compute_group.isin([128.0, 256.0]) & (few.model != "S2")]  # 2 runs below the top group
    entry = fit_stage(_fit_study(tmp_path), few)["fits"][0]
    assert entry["extrapolation_check"] is None and "too few runs" in entry["extrapolation_check_reason"]
    assert "not made" in describe(entry)


def test_largest_group_of_a_samples_seen_grid_is_the_largest_run() -> None:
    import pandas as pd

    from clipscale.study.extrapolation import largest_group

    rows = pd.DataFrame({"compute": [10.0, 50.0, 100.0, 105.0, 99.0], "compute_group": [None] * 5})
    assert list(largest_group(rows)) == [False, False, True, True, True]  # within 0.05 dex of 105
    rows["compute_group"] = [None, 64.0, 128.0, 128.0, None]  # a compute block's levels, samples-seen runs
    assert list(largest_group(rows)) == [False, False, True, True, False]


def _shard(path: Path, n: int, *, incomplete: int = 0) -> None:
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(n + incomplete):
            parts = {"png": b"\x89PNG not decoded", "txt": b"a caption"} if i < n else {"png": b"x"}
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{path.stem}_{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


SHARD_STUDY = """
[study]
name = "s"
[datasets.real]
shards = "shards/{00000..00001}.tar"
[[grid]]
model = "tiny-S0"
dataset = "real"
samples_seen = 2000
"""


def test_shard_data_size_defaults_to_the_samples_the_shards_hold(tmp_path: Path) -> None:
    from clipscale.study.grid import plan
    from tests.study_fakes import fake_flops

    _shard(tmp_path / "shards" / "00000.tar", 30, incomplete=2)  # an image without caption: not a sample
    _shard(tmp_path / "shards" / "00001.tar", 20)
    study = load_study(_write(tmp_path, SHARD_STUDY))
    assert study.datasets["real"].size == 50
    (run,) = plan(study, flops=fake_flops)
    assert run.data_size == 50
    (tmp_path / "shards" / "00001_stats.json").write_text('{"successes": 25}')  # img2dataset's count wins
    assert load_study(_write(tmp_path, SHARD_STUDY)).datasets["real"].size == 55


def test_a_data_size_over_the_shards_is_one_line(tmp_path: Path) -> None:
    _shard(tmp_path / "shards" / "00000.tar", 30)
    _shard(tmp_path / "shards" / "00001.tar", 20)
    path = _write(tmp_path, SHARD_STUDY.replace('dataset = "real"', 'dataset = "real"\ndata_size = [40, 60]'))
    with pytest.raises(ClipscaleError) as err:
        load_study(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "data_size" in msg and "'real'" in msg and "50 samples" in msg
    assert "\n" not in msg


def test_shards_not_here_leave_data_size_as_given_and_the_dry_run_says_so(tmp_path: Path, capsys) -> None:
    from unittest import mock

    from clipscale.cli import main
    from tests.study_fakes import fake_flops

    text = SHARD_STUDY.replace('"shards/{00000..00001}.tar"', '"/cluster/data/{00000..00099}.tar"')
    study = load_study(_write(tmp_path, text.replace('dataset = "real"', 'dataset = "real"\ndata_size = 10')))
    assert study.datasets["real"].size is None and study.grid[0].data_size == (10,)
    _write(tmp_path, text)
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        assert main(["run", str(tmp_path / "study.toml"), "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "dataset real: shards /cluster/data/{00000..00099}.tar not found here" in out


@pytest.mark.parametrize("dry_run", [True, False])
def test_local_study_with_shards_not_here_is_refused_at_plan_time(tmp_path: Path, capsys,
                                                                  dry_run: bool) -> None:
    """Tour 3 #2: a local study with a wrong shard path passed `--dry-run` ("not checked"), then made the
    eval sets and failed its run. The local executor trains here: one exit-2 line naming the study file,
    the dataset's field and the missing shard, before anything is written."""
    from unittest import mock

    from clipscale.cli import main
    from tests.study_fakes import fake_flops

    _shard(tmp_path / "shards" / "00000.tar", 30)  # 00001.tar is missing
    path = _write(tmp_path, SHARD_STUDY.replace('dataset = "real"', 'dataset = "real"\ndata_size = 10'))
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        assert main(["run", str(path), *(["--dry-run"] if dry_run else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"clipscale: error: {path}: [datasets.real] shards: "
                                                   f"shard {tmp_path / 'shards' / '00001.tar'} "), err
    assert "does not exist" in err
    assert not (tmp_path / "s").exists()  # no output dir, no eval sets, no run


def test_a_failing_distribution_leaves_the_others_fits_as_they_were(tmp_path: Path) -> None:
    """When one distribution cannot be fitted, the others are fitted alone; each keeps the seed it has in
    the joint fit (its place among the distributions), so its CI is the same as when nothing failed."""
    import pandas as pd

    from clipscale.study.pipeline import fit_stage

    base = _demo_table(repeated=False)
    zipf = base.assign(distribution="zipf", run_id=base.run_id + "-z",
                       **{"image_retrieval_recall@5": 1 - (1 - base["image_retrieval_recall@5"]) * 1.05})
    broken = zipf.iloc[:1].assign(distribution="zzz", run_id="lonely")  # one point: no law fits
    study = _fit_study(tmp_path, "check_largest = false\n")
    both = fit_stage(study, pd.concat([base, zipf]))
    three = fit_stage(study, pd.concat([base, zipf, broken]))
    assert [f["distribution"] for f in three["failed"]] == ["zzz"]
    ci = {f["distribution"]: f["ci"] for f in both["fits"]}
    assert {f["distribution"]: f["ci"] for f in three["fits"]} == ci
