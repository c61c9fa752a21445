"""`--json` on every verb that lacked it: stdout is exactly one JSON document with the verb's facts, and
the progress lines the text output prints go to stderr instead (issue 21, "Outputs")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from clipscale.cli import main
from tests.test_data_emoji import node_modules  # noqa: F401 (fixture)
from tests.test_study_import import write_clip_benchmark


def json_out(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> dict[str, Any]:
    capsys.readouterr()
    assert main([*argv, "--json"]) == code
    return json.loads(capsys.readouterr().out)  # fails on any progress line left on stdout


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's study, every run finished by the fakes (as tests/test_readme.py builds it)."""
    from clipscale.study.demo import install_demo
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study
    from tests.study_fakes import FAKE_HOOKS, fake_flops

    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        path = install_demo(tmp_path_factory.mktemp("json") / "clipscale-demo")
        path.write_text(path.read_text(encoding="utf-8").replace("bootstrap = 200", "bootstrap = 20"))
        run_study(load_study(path), hooks=FAKE_HOOKS, jobs=1, log=lambda s: None)
    return path


def test_run_report_results_and_demo_print_one_json_document(finished_study: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tests.study_fakes import fake_flops

    out = finished_study.parent
    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        plan = json_out(["run", str(finished_study), "--dry-run"], capsys)
        assert plan["dry_run"] is True and plan["planned"] > 0 and plan["total_compute"] > 0
        run = json_out(["run", str(finished_study)], capsys)
        assert run["planned"] == plan["planned"] == run["already_finished"] and run["to_run"] == 0
        assert run["failed_runs"] == run["unfinished_runs"] == [] and run["signal"] is None
        assert run["complete"] is True and run["exit_status"] == 0
        assert {k: Path(run[k]).name for k in ("results", "fits", "report")} == {
            "results": "results.csv", "fits": "fits.json", "report": "report.html"}
        assert run["runs"] == []  # outcomes of this call only: nothing was left to run

        report = json_out(["report", str(finished_study), "--out", str(out / "r.html")], capsys)
        assert report["complete"] is True and report["missing"] == []
        assert report["report"] == str(out / "r.html")
        assert (out / "r.html").exists()

        results = json_out(["results", str(finished_study), "--format", "json", "--out", str(out / "t.json")],
                           capsys)
        rows = (out / "t.json").read_text().splitlines()
        assert results == {"path": str(out / "t.json"), "format": "json", "rows": len(rows)} and rows

        capsys.readouterr()
        assert main(["demo", "--out", str(out), "--json"]) == 0  # every run done: skips to fits and report
        captured = capsys.readouterr()
        demo = json.loads(captured.out)
        assert "clipscale demo: study" in captured.err  # progress went to stderr, not stdout
        assert demo["complete"] is True and demo["exit_status"] == 0 and demo["planned"] == run["planned"]
        assert demo["summary"][0].startswith("fitted laws") and Path(demo["report"]).exists()


def test_text_output_is_unchanged_without_json(finished_study: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["results", str(finished_study), "--out", str(finished_study.parent / "t.csv")]) == 0
    assert capsys.readouterr().out == f"{finished_study.parent / 't.csv'}\n"
    from tests.study_fakes import fake_flops

    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        assert main(["demo", "--out", str(finished_study.parent)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("clipscale demo: study ") and any(x.startswith("fitted laws") for x in lines)
    assert [line.split(":")[0] for line in lines[-4:-1]] == ["results", "fits", "report"]
    assert lines[-1].startswith("demo finished in ")


def test_import_json_names_the_runs_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = write_clip_benchmark(tmp_path / "bench")
    doc = json_out(["import", str(bench), "--out", str(tmp_path / "out")], capsys)
    assert doc["table"] == str(tmp_path / "out" / "results.csv") and len(doc["runs"]) == 5
    assert all((tmp_path / "out" / "runs" / r).is_dir() for r in doc["runs"])


def test_data_json_says_what_was_written(tmp_path: Path, node_modules: Path,  # noqa: F811
                                         capsys: pytest.CaptureFixture[str]) -> None:
    doc = json_out(["data", "synth", "--out", str(tmp_path / "s"), "--samples", "20"], capsys)
    assert doc["out"] == str(tmp_path / "s") and doc["meta"]["samples"] == 20
    assert doc["meta"]["num_shards"] == 1
    doc = json_out(["data", "synth-eval", "--out", str(tmp_path / "e"), "--samples-per-task", "4"], capsys)
    assert doc["meta"]["tasks"] and doc["meta"]["samples_per_task"] == 4
    doc = json_out(["data", "emoji", "--out", str(tmp_path / "m"), "--packages", str(node_modules)], capsys)
    assert doc["meta"] == json.loads((tmp_path / "m" / "meta.json").read_text())


def test_train_json_is_the_summary(synth_train_shards: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'model = "tiny-S0"\ntrain_data = "{synth_train_shards}"\n'
                   f'output_dir = "{tmp_path / "run"}"\n'
                   "samples_seen = 32\nbatch_size = 16\nthreads = 1\nworkers = 0\nprogress = true\n"
                   "log_every = 1\n")
    doc = json_out(["train", str(cfg)], capsys)
    assert doc["state"] == "finished" and doc["samples_seen"] == 32 and doc["model"] == "tiny-S0"
    assert doc == {"model": "tiny-S0", "output_dir": str(tmp_path / "run"),
                   **json.loads((tmp_path / "run" / "summary.json").read_text())}
