"""The study's results table: one tidy row per (run, checkpoint, dataset, task), rebuilt from run dirs.

Run directories are the source of truth (run.json for the cell, results.jsonl for evaluations), so
the table can always be regenerated, never drifts from what was measured, and a duplicated eval
record (a crash between append and bookkeeping) collapses to one row. It is the input of
`clipscale fit` and of the report. The eval suite's [[aggregate]] entries add rows of their own
(`add_aggregates`), so `[fit] metrics` and `clipscale fit --where "dataset == 'NAME'"` fit them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_bytes, read_jsonl
from clipscale.study.spec import StudySpec

IMPORTED_FILE = "imported.json"
FORMATS = {"csv": "csv", "parquet": "parquet", "json": "jsonl"}
ID_COLUMNS = ("run_id", "model", "params", "params_nonemb", "gmacs", "data_size", "samples_seen", "compute",
              "distribution", "dataset_train", "seed", "dataset", "task", "checkpoint", "run_samples_seen",
              "final", "compute_group")


def _read_cell(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _params_nonemb(cell: dict[str, Any]) -> float | None:
    """The cell's params without token/positional embeddings; run.json written before that key existed
    gets it counted from the model name (null for an architecture this process does not know)."""
    if "mparams_nonemb" in cell:
        return cell["mparams_nonemb"]
    from clipscale.models.flops import count_flops
    from clipscale.models.registry import list_models

    model = cell.get("model")
    return float(count_flops(model).mparams_nonemb) if model in list_models() else None


def run_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of one run directory (empty if it never started or has no evaluations)."""
    cell = _read_cell(run_dir)
    if cell is None:
        return []
    latest: dict[tuple, dict[str, Any]] = {}
    nonemb = _params_nonemb(cell)
    for rec in read_jsonl(run_dir / "results.jsonl"):
        key = (rec.get("samples_seen"), rec.get("dataset"), rec.get("task"))
        latest[key] = rec  # the newest record of a (checkpoint, dataset, task) wins
    rows = []
    for rec in latest.values():
        # unknown samples seen / compute (imported runs, clipscale import) stay null, never 0
        samples = None if rec.get("samples_seen") is None else int(rec["samples_seen"])
        compute = rec.get("compute")
        if compute is None and samples is not None and cell["gmacs"] is not None:
            compute = cell["gmacs"] * samples
        planned = cell["samples_seen"]
        row = {"run_id": cell["run_id"], "model": cell["model"], "params": cell["mparams"],
               "params_nonemb": nonemb, "gmacs": cell["gmacs"], "data_size": cell["data_size"],
               "samples_seen": samples, "compute": compute, "distribution": cell["distribution"],
               "dataset_train": cell["dataset"], "seed": cell["seed"], "dataset": rec.get("dataset"),
               "task": rec.get("task"), "checkpoint": Path(str(rec.get("checkpoint", ""))).name,
               "run_samples_seen": planned,
               "final": None if samples is None or planned is None else samples >= planned,
               "compute_group": cell.get("compute_group")}
        for name, value in (rec.get("metrics") or {}).items():
            if isinstance(value, int | float) or value is None:
                row[name] = value
        rows.append(row)
    return rows


def build_results_table(study: StudySpec, *, run_ids: list[str] | None = None) -> Any:
    """A pandas DataFrame of every evaluation of the study's runs (or of the given run ids)."""
    import pandas as pd

    if run_ids is None:
        run_ids = _planned_ids(study)
    rows = [row for rid in run_ids for row in run_rows(study.runs_dir / rid)]
    if not rows:
        return pd.DataFrame(columns=list(ID_COLUMNS))
    df = add_aggregates(pd.DataFrame(rows), suite_aggregates(study))
    metrics = sorted(c for c in df.columns if c not in ID_COLUMNS)
    df = df[[*ID_COLUMNS, *metrics]]
    return df.sort_values(["model", "distribution", "data_size", "run_samples_seen", "samples_seen",
                           "dataset", "task"], kind="stable").reset_index(drop=True)


def suite_aggregates(study: StudySpec) -> list[Any]:
    """The [[aggregate]] entries of the study's eval suite (parsed only: no data is read)."""
    from clipscale.evals.suite import load_suite

    return load_suite(study.eval.suite, root=study.eval_root()).aggregates


AGGREGATE_TASK = "aggregate"


def add_aggregates(df: Any, aggregates: list[Any]) -> Any:
    """`df` plus one row per (run, checkpoint) and aggregate whose every (dataset, metric) part has a
    value there: the ID columns of its first part's row, `dataset` = the aggregate's name, `task` =
    "aggregate", and the aggregate's metric column = the parts' mean (nothing else)."""
    import pandas as pd

    if not aggregates or df.empty:
        return df
    key = df.run_id.astype(str) + "\0" + df.checkpoint.astype(str) + "\0" + df.samples_seen.astype(str)
    extra = []
    for agg in aggregates:
        if any(metric not in df.columns for _, metric in agg.parts):
            continue
        values = []
        for d, m in agg.parts:
            has = (df.dataset == d) & df[m].notna()
            part = df.loc[has, m].set_axis(key[has])
            values.append(part[~part.index.duplicated(keep="last")])
        both = pd.concat(values, axis=1, join="inner")  # checkpoints with every part
        if both.empty:
            continue
        first = df[df.dataset == agg.parts[0][0]].set_axis(key[df.dataset == agg.parts[0][0]])
        first = first[~first.index.duplicated(keep="last")]
        rows = first.loc[both.index, [c for c in ID_COLUMNS if c in first.columns]].copy()
        rows["dataset"], rows["task"] = agg.name, AGGREGATE_TASK
        rows[agg.metric] = both.mean(axis=1).to_numpy(float)
        extra.append(rows.reset_index(drop=True))
    return pd.concat([df, *extra], ignore_index=True) if extra else df


def _planned_ids(study: StudySpec) -> list[str]:
    """The runs of the study file as it is now (an edited cell's old run dir is not part of it)."""
    from clipscale.study.grid import plan

    ids = [r.run_id for r in plan(study)]
    try:  # runs brought in by `clipscale import SOURCE --out STUDY.toml`
        imported = json.loads((study.output_dir / IMPORTED_FILE).read_text(encoding="utf-8"))["runs"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        imported = []
    return ids + [r for r in imported if r not in ids]


def table_bytes(df: Any, fmt: str) -> bytes:
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "json":
        return df.to_json(orient="records", lines=True).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    raise ClipscaleError(f"unknown results format {fmt!r}; valid: {', '.join(FORMATS)}")


def write_results(study: StudySpec, *, fmt: str = "csv", out: str | Path | None = None) -> Path:
    """Rebuild the table and write it atomically (default STUDY_OUT/results.<ext>)."""
    return write_results_table(study, fmt=fmt, out=out)[0]


def write_results_table(study: StudySpec, *, fmt: str = "csv", out: str | Path | None = None
                        ) -> tuple[Path, int]:
    """`write_results`, also returning the number of rows written (for `clipscale results --json`)."""
    if fmt not in FORMATS:
        raise ClipscaleError(f"unknown results format {fmt!r}; valid: {', '.join(FORMATS)}")
    df = build_results_table(study)
    path = Path(out) if out else study.output_dir / f"results.{FORMATS[fmt]}"
    atomic_write_bytes(path, table_bytes(df, fmt))
    return path, len(df)
