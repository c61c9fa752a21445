"""Property tests (issue 20): malformed study files and results tables give one-line ClipscaleErrors.

Hypothesis generates TOML values and tables in place of each study key, and CSV/JSON-lines tables
with odd columns and values for `clipscale fit`'s reader; whatever it generates, loading either
accepts it or raises a one-line `ClipscaleError`, never another exception. Small and derandomized,
so CI runs the same examples every time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipscale.errors import ClipscaleError
from clipscale.study.spec import parse_study

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = (st.integers(min_value=-10**20, max_value=10**20) | st.floats(allow_nan=True, allow_infinity=True)
           | st.booleans() | st.text(max_size=8) | st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)

BASE: dict[str, Any] = {
    "study": {"name": "p"},
    "datasets": {"uni": {"synth": "uniform", "samples": 1000}},
    "train": {"lr": 1e-3, "batch_size": 10},
    "grid": [{"model": ["tiny-S0"], "dataset": ["uni"], "data_size": [1000], "samples_seen": [100]}],
}
KEYS = [("study", "name"), ("study", "output_dir"), ("study", "model_configs"),
        ("datasets", "uni"), ("train", "lr"), ("train", "batch_size"), ("train", "warmup_fraction"),
        ("train", "checkpoint_points"), ("eval", "suite"), ("eval", "data_root"), ("eval", "batch_size"),
        ("eval", "samples_per_task"), ("fit", "laws"), ("fit", "metrics"), ("fit", "bootstrap"),
        ("fit", "predict_compute"), ("fit", "frontier"), ("fit", "fix"), ("fit", "link"),
        ("executor", "jobs"), ("executor", "threads_per_job"), ("executor", "gpus_per_run"),
        ("slurm", "mem_gb"), ("slurm", "nodes"), ("slurm", "partition"), ("slurm", "time_min"),
        ("grid", "compute"), ("grid", "samples_seen"), ("grid", "data_size"), ("grid", "seed"),
        ("rules", "when"), ("rules", "set")]


def _one_line(exc: ClipscaleError) -> None:
    assert str(exc) and "\n" not in str(exc), repr(str(exc))


def _with(section: str, key: str, value: Any) -> dict[str, Any]:
    doc = {k: (dict(v) if isinstance(v, dict) else [dict(b) for b in v]) for k, v in BASE.items()}
    if section == "grid":
        doc["grid"][0].pop("samples_seen")
        doc["grid"][0][key] = value
    elif section == "rules":
        doc["rules"] = [{"when": {"model": "tiny-S0"}, "set": {}, key: value}]
    else:
        doc.setdefault(section, {})[key] = value
    return doc


def _load_and_plan(doc: dict[str, Any]) -> None:
    """What load accepts, planning can use: a spec that parses plans, or fails in one line."""
    from clipscale.study.grid import plan
    from tests.study_fakes import fake_flops

    spec = parse_study(doc, path=Path("/nonexistent/study.toml"))
    spec.eval_root()
    plan(spec, flops=fake_flops)


@SETTINGS
@given(st.sampled_from(KEYS), values)
def test_study_spec_rejects_any_bad_value_in_one_line(where: tuple[str, str], value: Any) -> None:
    try:
        _load_and_plan(_with(*where, value))
    except ClipscaleError as exc:
        _one_line(exc)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*BASE, "eval", "fit", "executor", "slurm", "rules", "x"]), values,
                       max_size=5))
def test_study_spec_rejects_any_bad_table_in_one_line(doc: dict[str, Any]) -> None:
    try:
        parse_study(doc, path=Path("/nonexistent/study.toml"))
    except ClipscaleError as exc:
        _one_line(exc)


@SETTINGS
@given(st.text(max_size=200))
def test_study_file_text_never_escapes_as_another_exception(text: str) -> None:
    from clipscale.io import read_toml

    path = Path("/tmp") / "clipscale-hypothesis-study.toml"
    path.write_text(text, encoding="utf-8")
    try:
        parse_study(read_toml(path, what="study file"), path=path)
    except ClipscaleError as exc:
        _one_line(exc)


cells = (st.integers(-10**6, 10**6).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
         | st.sampled_from(["", "nan", "inf", "-1", "0", "x", '"a,b"', "1e400", "None"]))
COLUMNS = ["compute", "acc1", "dataset", "params", "samples_seen", "final"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@SETTINGS
@given(columns=st.lists(st.sampled_from([*COLUMNS, "", "x y"]), min_size=1, max_size=4),
       rows=st.lists(st.lists(cells, min_size=0, max_size=5), max_size=6))
def test_results_table_reader_and_fit_reject_malformed_tables_in_one_line(
        tmp_path: Path, suffix: str, columns: list[str], rows: list[list[str]]) -> None:
    from clipscale.fit.rows import load_table
    from clipscale.fit.table import fit_table

    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        path.write_text("\n".join([",".join(columns), *(",".join(r) for r in rows)]) + "\n")
    else:
        lines = ["{" + ", ".join(f'"{c}": {v if _is_json_number(v) else chr(34) + v + chr(34)}'
                                 for c, v in zip(columns, r, strict=False)) + "}" for r in rows]
        path.write_text("\n".join(lines) + "\n")
    try:
        df = load_table(path)
        fit_table(df, law="power", y="acc1", C="compute", error=True)
    except ClipscaleError as exc:
        _one_line(exc)


def _is_json_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and text.strip() == text and text not in ("", "nan", "inf")
    except ValueError:
        return False

