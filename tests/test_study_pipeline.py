"""`clipscale run` ends in results → fits → report: saved fits `clipscale predict` can read, the isoFLOP
analysis, data-constrained runs handled alike everywhere, nothing final for an unfinished study.

Training and evaluation are stand-ins whose error is a known law of model size N and samples D
(E = 0.02·N^-0.5 + 3·D^-0.35), so the compute-optimal size lies inside the ladder at most budgets and
the tests can check the pipeline's numbers; real training is covered by test_study_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from clipscale.cli import main
from clipscale.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from clipscale.study.runner import Hooks
from clipscale.study.spec import load_study
from tests import study_fakes

STUDY = """
[study]
name = "p"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 400000

[datasets.zipf]
synth = "zipf"
samples = 400000

[train]
lr = 1e-3
batch_size = 64

[[grid]]
model = ["tiny-S0", "tiny-S1", "tiny-S2"]
dataset = ["uni", "zipf"]
data_size = 400000
compute = [40.0, 160.0, 640.0, 2560.0]

[[grid]]  # data-constrained: 300 unique samples seen ~53 times
model = "tiny-S1"
dataset = "uni"
data_size = 300
samples_seen = 16000

[fit]
laws = ["frontier", "power"]
bootstrap = 20
"""
# (GMACs, M params, M params without embeddings): the law below is of the total, N defaults to the other
FLOPS = {"tiny-S0": (0.01, 0.034, 0.02), "tiny-S1": (0.05, 0.22, 0.19), "tiny-S2": (0.13, 0.6, 0.56)}


def flops(model: str) -> tuple[float, float, float]:
    return FLOPS[model]


def law_error(n: float, d: float, data_size: float) -> float:
    penalty = 1.5 if d / data_size > 10 else 1.0  # repeated data hurts: off the law of C
    return penalty * (0.02 * n**-0.5 + 3 * d**-0.35)


def train(kwargs: dict) -> None:
    run_dir = Path(kwargs["output_dir"])
    if kwargs["model"] == os.environ.get("FAKE_FAIL_MODEL"):
        raise RuntimeError("loss is NaN at step 3")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    total = kwargs["samples_seen"]
    for s in (total // 2, total):
        append_jsonl(run_dir / "metrics.jsonl", {"samples_seen": s, "loss": 1.0 / s})
        atomic_write_text(run_dir / "checkpoints" / f"samples_{s:012d}.pt", "stand-in")
    atomic_write_json(run_dir / "summary.json", {"state": "finished", "samples_seen": total})


def evaluate(*, run_dir: Path, suite: str, data_root: str, device: str, batch_size: int) -> None:
    cell = json.loads((run_dir / "run.json").read_text())
    if any(True for _ in read_jsonl(run_dir / "results.jsonl")):
        return
    for ckpt in sorted((run_dir / "checkpoints").glob("samples_*.pt")):
        s = int(ckpt.stem.split("_")[1])
        err = law_error(cell["mparams"], s, cell["data_size"])
        append_jsonl(run_dir / "results.jsonl", {
            "checkpoint": str(ckpt), "samples_seen": s, "compute": s * cell["gmacs"],
            "dataset": "synth_retrieval", "task": "zeroshot_retrieval",
            "metrics": {"image_retrieval_recall@5": 1 - err}})


HOOKS = Hooks(train=train, evaluate=evaluate, train_data=study_fakes.write_train_data,
              eval_data=study_fakes.write_eval_data)


@pytest.fixture(autouse=True)
def _stand_ins():
    with mock.patch("clipscale.study.grid.default_flops", flops), \
            mock.patch("clipscale.study.runner.Hooks", lambda: HOOKS):
        yield


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One `clipscale run` of the study (module-scoped: the tests below read its output)."""
    root = tmp_path_factory.mktemp("pipeline")
    (root / "study.toml").write_text(STUDY)
    with mock.patch("clipscale.study.grid.default_flops", flops), \
            mock.patch("clipscale.study.runner.Hooks", lambda: HOOKS):
        assert main(["run", str(root / "study.toml"), "--jobs", "1"]) == 0
    return root


def _fits(root: Path) -> dict:
    return json.loads((root / "out" / "fits.json").read_text())


def test_run_ends_with_results_fits_and_report(finished: Path) -> None:
    out = finished / "out"
    assert {"results.csv", "fits.json", "report.html"} <= {p.name for p in out.iterdir()}
    doc = _fits(finished)
    assert doc["complete"] and not doc["missing_runs"] and not doc["failed"]
    groups = [f["group"] for f in doc["fits"]]
    target = "synth_retrieval/image_retrieval_recall@5"
    assert groups == [f"{target}/uniform/frontier", f"{target}/zipf/frontier",  # one scheme, unique
                      f"{target}/uniform/power", f"{target}/zipf/power"]
    text = (out / "report.html").read_text()
    assert "Complete: all 25 runs" in text and f"<code>{target}/uniform/frontier</code>" in text
    assert "<td>NaN</td>" not in text and "<td>None</td>" not in text  # e.g. no compute group: a dash


def test_predict_reads_the_study_fits(finished: Path, capsys) -> None:
    fits = finished / "out" / "fits.json"
    capsys.readouterr()
    name = "synth_retrieval/image_retrieval_recall@5/uniform/frontier"
    assert main(["predict", str(fits), "--group", name, "--C", "1e4", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    entry = next(f for f in _fits(finished)["fits"] if f["group"] == name)
    a, alpha = entry["params"]["A"], entry["params"]["alpha"]
    assert pred["prediction"]["predicted_error"] == pytest.approx([a * 1e4**alpha])
    lo, hi = pred["prediction"]["ci_low"][0], pred["prediction"]["ci_high"][0]
    assert lo < hi  # the saved bootstrap refits give predict its interval
    assert main(["predict", str(fits), "--C", "1e4"]) == 2  # several groups: the error lists their names
    assert "synth_retrieval/image_retrieval_recall@5/uniform/power" in capsys.readouterr().err
    # an unambiguous tail names the same fit; an ambiguous one lists what it matches, and picks none
    assert main(["predict", str(fits), "--group", "uniform/frontier", "--C", "1e4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == pred["prediction"]
    assert main(["predict", str(fits), "--group", "frontier", "--C", "1e4"]) == 2
    err = capsys.readouterr().err
    assert "--group 'frontier' matches 2 groups" in err and f"{name}, " in err


def test_data_constrained_runs_are_left_out_alike(finished: Path) -> None:
    doc = _fits(finished)
    (constrained,) = doc["constrained_runs"]
    uni = next(f for f in doc["fits"] if f["group"].endswith("/uniform/power"))
    assert uni["n_runs"] == 12 and uni["n_points"] == 12  # 3 sizes x 4 budgets, the repeated run left out
    (off,) = doc["off_law"]
    assert off["run_id"] == constrained and off["ratio"] == pytest.approx(1.5, rel=0.15)
    assert all(o["n_runs"] == 12 for o in doc["isoflop"])
    text = (finished / "out" / "report.html").read_text()
    assert "data-constrained: 1 of 25 runs left out" in text


def test_isoflop_analysis_is_saved_and_shown(finished: Path) -> None:
    doc = _fits(finished)
    if any("unavailable" in o.get("error", "") for o in doc["isoflop"]):
        pytest.skip("clipscale.fit.analyses.isoflop (helper 12a) is not in this tree")
    uni = next(o for o in doc["isoflop"] if o["distribution"] == "uniform")
    edges = [b["edge"] for b in sorted(uni["budgets"], key=lambda b: b["C"])]
    assert edges == [True, True, False, False]  # at C = 40 and 160 the smallest model is the best run
    # the vertices of the known law's parabolas grow with compute
    inside = [b for b in uni["budgets"] if not b["edge"]]
    assert np.all(np.diff([b["N_opt"] for b in sorted(inside, key=lambda b: b["C"])]) > 0)
    assert 0.2 < uni["a"] < 1.0
    assert "isoFLOP analysis: compute-optimal model size" in (finished / "out" / "report.html").read_text()


def test_n_is_params_nonemb_by_default_and_n_column_chooses(finished: Path, tmp_path: Path) -> None:
    """The results table carries params_nonemb; laws in N and the isoFLOP analysis use it unless
    `[fit] n_column = "params"`; any other value is a one-line error naming the key."""
    import dataclasses

    from clipscale.errors import ClipscaleError
    from clipscale.study.pipeline import fit_stage
    from clipscale.study.results import build_results_table

    study = load_study(finished / "study.toml")
    df = build_results_table(study)
    assert study.fit.n_column == "params_nonemb"
    assert {(m, p, q) for m, p, q in zip(df.model, df.params, df.params_nonemb, strict=True)} == {
        (m, p, q) for m, (_, p, q) in FLOPS.items()}
    doc = _fits(finished)
    assert doc["settings"]["inputs"]["N"] == "params_nonemb"
    uni = next(o for o in doc["isoflop"] if o["distribution"] == "uniform")
    assert uni["inputs"]["N"] == "params_nonemb"
    totals = fit_stage(dataclasses.replace(study, fit=dataclasses.replace(study.fit, n_column="params")), df)
    uni_total = next(o for o in totals["isoflop"] if o["distribution"] == "uniform")
    assert uni_total["inputs"]["N"] == "params" and totals["settings"]["inputs"]["N"] == "params"
    n_opt = {b["C"]: b["N_opt"] for b in uni["budgets"] if not b["edge"]}
    n_opt_total = {b["C"]: b["N_opt"] for b in uni_total["budgets"] if not b["edge"]}
    assert n_opt.keys() == n_opt_total.keys() and all(n_opt[c] < n_opt_total[c] for c in n_opt)
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("bootstrap = 20", 'bootstrap = 20\nn_column = "mparams"'))
    with pytest.raises(ClipscaleError, match=r"\[fit\] n_column.*params_nonemb, params, got 'mparams'"):
        load_study(path)


def test_report_renders_the_saved_fits(finished: Path) -> None:
    """The report draws what fits.json says (no refit): an edited parameter shows up in the page."""
    from clipscale.report import write_report

    study = load_study(finished / "study.toml")
    doc = _fits(finished)
    doc["fits"][0]["params"]["alpha"] = -0.123456
    path = write_report(study, out=finished / "edited.html", fits=doc)
    assert "alpha = -0.1235" in path.read_text()


def test_no_report_and_an_unfinished_study(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("[40.0, 160.0, 640.0, 2560.0]", "[40.0, 160.0]"))
    assert main(["run", str(path), "--no-report"]) == 0
    assert not (tmp_path / "out" / "fits.json").exists() and not (tmp_path / "out" / "report.html").exists()
    monkeypatch.setenv("FAKE_FAIL_MODEL", "tiny-S1")
    path.write_text(STUDY.replace("[40.0, 160.0, 640.0, 2560.0]", "[40.0, 160.0, 640.0]"))
    capsys.readouterr()
    assert main(["run", str(path)]) == 1  # the new tiny-S1 run fails: no fits, no report
    out = capsys.readouterr().out
    assert "no fits or report yet: 2 of 19 runs are not finished (2 failed)" in out
    assert not (tmp_path / "out" / "report.html").exists()
    assert main(["report", str(path)]) == 0  # asked for explicitly: a partial report, marked so
    doc = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert not doc["complete"] and {m["state"] for m in doc["missing_runs"]} == {"failed"}
    text = (tmp_path / "out" / "report.html").read_text()
    assert "Incomplete: 2 of 19 runs have not finished" in text
    assert doc["missing_runs"][0]["run_id"] in text


def test_frontier_and_fix_reach_the_fit(tmp_path: Path) -> None:
    import dataclasses
    import inspect

    from clipscale.fit.table import fit_table_results
    from clipscale.study.pipeline import fit_stage
    from clipscale.study.results import build_results_table
    from clipscale.study.runner import run_study

    if "frontier" not in inspect.signature(fit_table_results).parameters:
        pytest.skip("fit_table_results(frontier=...) (helper 12a) is not in this tree")
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace('laws = ["frontier", "power"]', 'laws = ["power"]\nfrontier = "pareto"'))
    study = load_study(path)
    run_study(study, log=lambda s: None)
    doc = fit_stage(study, build_results_table(study))
    assert [f["frontier"] for f in doc["fits"]] == ["pareto", "pareto"]
    assert all(f["n_fitted"] < f["n_points"] == 12 for f in doc["fits"])  # the frontier's points only
    held = dataclasses.replace(study, fit=dataclasses.replace(study.fit, fix={"alpha": -0.3, "E_inf": 0.1}))
    doc = fit_stage(held, build_results_table(study))  # E_inf is not a parameter of power: not passed
    assert [f["params"]["alpha"] for f in doc["fits"]] == [-0.3, -0.3] and not doc["failed"]
    squares = dataclasses.replace(study, fit=dataclasses.replace(study.fit, objective="squares"))
    doc = fit_stage(squares, build_results_table(study))  # [fit] objective reaches every fit
    assert [f["objective_kind"] for f in doc["fits"]] == ["squares", "squares"] and not doc["failed"]


def test_report_does_not_import_the_study_package() -> None:
    code = ("import sys, clipscale.report; "
            "bad = [m for m in sys.modules if m.startswith('clipscale.study')]; "
            "assert not bad, bad; import clipscale.study.pipeline, clipscale.study")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)



def test_demo_summary_reads_the_fits(finished: Path) -> None:
    from clipscale.study.demo import summarize

    lines = summarize(_fits(finished), primary="image_retrieval_recall@5")
    text = "\n".join(lines)
    head = "synth_retrieval/image_retrieval_recall@5"
    assert f"  {head}/uniform/frontier: E = A·C^alpha" in text  # a law's line starts with its group name
    assert f"{head}/uniform/frontier: tiny-S1 on 300 samples x53: error" in text  # repeated run vs its law
    iso = next(line for line in lines if line.startswith(f"  {head}/zipf: "))  # isoFLOP line
    assert "C=40: " in iso or "isoFLOP analysis unavailable" in iso


def test_every_law_is_checked_on_the_largest_compute_group(finished: Path) -> None:
    doc = _fits(finished)
    for f in doc["fits"]:
        check = f["extrapolation_check"]
        assert check["group_compute"] == 2560.0 and len(check["runs"]) == 3 and check["n_runs"] == 9
        if check["verdict"] is None:  # the refit's frontier has too few points for an interval: says so
            assert "fewer points than parameters" in check["reason"] and check["ci_low"] is None
        else:
            assert check["verdict"] in ("held", "missed") and check["ci_low"] < check["ci_high"]
    text = (finished / "out" / "report.html").read_text()
    assert "Does the law predict the largest run?" in text and "95% prediction interval" in text


def test_distributions_are_compared_across_compute(finished: Path, capsys) -> None:
    """fits.json's `comparisons`: per target and law of compute, uniform against zipf at the largest
    compute measured and beyond, with the crossover; the report shows them; `clipscale compare` on
    fits.json gives the same numbers from the saved refits."""
    doc = _fits(finished)
    comps = doc["comparisons"]
    assert {(c["dataset"], c["law"]) for c in comps} == {(f["dataset"], f["law"]) for f in doc["fits"]}
    for c in comps:
        assert c["groups"] == ["uniform", "zipf"] and len(c["at"]) == 3
        assert all(r["ci"] is None or r["ci"][0] <= r["ci"][1] for r in c["at"])
        assert c["crossover"]["C"] is None or c["range"][0] <= c["crossover"]["C"] <= c["range"][1]
    assert "Which distribution is better, across compute?" in (finished / "out" / "report.html").read_text()
    assert main(["compare", str(finished / "out" / "fits.json"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["pairs"]
    assert [p["at"] for p in again] == [c["at"] for c in comps]
    assert [p["crossover"] for p in again] == [c["crossover"] for c in comps]


def test_a_suites_aggregate_is_the_headline_target() -> None:
    """Per metric, aggregates (the mean over a suite's sets) come first: the study's headline law and
    `--group DISTRIBUTION` are of the aggregate, not of whichever dataset sorts first."""
    import pandas as pd

    from clipscale.report.analysis import targets

    task = "retrieval"
    df = pd.DataFrame({"dataset": ["b_set", "a_set", "mean", "b_set"],
                       "task": [task, task, "aggregate", task],
                       "recall": [0.1, 0.2, 0.15, 0.3], "acc1": [None, 0.5, None, None]})
    assert targets(df, ("recall", "acc1")) == [("mean", "recall"), ("a_set", "recall"), ("b_set", "recall"),
                                               ("a_set", "acc1")]


def test_findings_headline_only_the_first_metrics_isoflop(finished: Path) -> None:
    """An isoFLOP exponent of another metric (here an 8-way accuracy at chance, as the demo's shape task)
    is a labelled detail of its own section, not a finding; the findings' isoFLOP lines are the ones
    `clipscale run` prints."""
    import dataclasses

    from clipscale.report import write_report
    from clipscale.study.demo import summarize
    from clipscale.study.pipeline import fit_stage
    from clipscale.study.results import build_results_table

    study = load_study(finished / "study.toml")
    study = dataclasses.replace(study, fit=dataclasses.replace(
        study.fit, metrics=("image_retrieval_recall@5", "acc1"), laws=("frontier",)))
    df = build_results_table(study)
    shape = df.copy()
    shape["dataset"], shape["task"] = "synth_shape", "zeroshot_classification"
    shape["image_retrieval_recall@5"] = np.nan
    shape["acc1"] = 0.125 + np.random.default_rng(0).normal(0, 0.01, len(shape))  # chance, 1/8
    import pandas as pd

    table = pd.concat([df, shape], ignore_index=True)
    doc = fit_stage(study, table)
    assert {o["metric"] for o in doc["isoflop"]} == {"image_retrieval_recall@5", "acc1"}
    text = write_report(study, out=finished / "findings.html", fits=doc, table=table).read_text()
    findings = text.split("<h2>Findings</h2>")[1].split("</div>")[0]
    iso_items = [item for item in findings.split("<li>") if item.startswith("isoFLOP")]
    assert iso_items and not any("synth_shape" in item for item in iso_items)
    assert "synth_retrieval/image_retrieval_recall@5/zipf: C=" in findings
    assert "isoFLOP analysis of acc1 (detail, not a finding)" in text
    lines = summarize(doc, primary="image_retrieval_recall@5")
    iso = [line.strip() for line in lines if line.startswith("  synth_retrieval/image_retrieval_recall@5/")
           and ": C=" in line]
    assert iso and all(line.replace("→", "->") in findings.replace("-&gt;", "->") for line in iso)
    assert not any("synth_shape/acc1" in line and "C=" in line for line in lines)


def test_no_fitted_law_says_why(tmp_path: Path, capsys) -> None:
    """No law: the text and the report say why (nothing finished yet; every fit failed; every run left out
    as data-constrained) instead of an empty heading."""
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    assert main(["report", str(path)]) == 0  # nothing has run: 25 runs pending
    out = capsys.readouterr().out
    assert ("fitted laws: none yet: no finished run has results for the [fit] metrics "
            "(image_retrieval_recall@5); 25 run(s) not finished") in out
    assert "fitted laws (" not in out and "0 of 0 runs" not in out and "(none)" not in out
    html = (tmp_path / "out" / "report.html").read_text()
    assert "No fitted laws: none yet: no finished run has results" in html
    assert "Frontier: cherti (frontier law); none (power law)." in html

    one = STUDY.split("[[grid]]")[0] + ('[[grid]]\nmodel = "tiny-S0"\ndataset = "uni"\ndata_size = 400000\n'
                                        'samples_seen = 16000\n[fit]\nlaws = ["frontier", "power"]\n')
    path.write_text(one)  # one run: one point per law, too few for 2 parameters
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("fitted laws: none (2 of 2 fits failed; synth_retrieval/image_retrieval_recall@5/uniform/"
            "frontier: law 'frontier' has 2 parameters") in out
    assert "ClipscaleError" not in out
    assert "No fitted laws: none (2 of 2 fits failed" in (tmp_path / "out" / "report.html").read_text()

    constrained = STUDY.split("[[grid]]")[0] + ('[[grid]]\nmodel = "tiny-S1"\ndataset = "uni"\n'
                                                'data_size = 300\nsamples_seen = 16000\n')
    path.write_text(constrained)
    (tmp_path / "out").rename(tmp_path / "old")
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("fitted laws: none: all 1 run(s) with results are data-constrained (more than 10 passes "
            "over their unique data) and left out of the laws of compute; [fit] max_passes = inf keeps "
            "them") in out
