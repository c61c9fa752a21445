"""Eval collections: many models (e.g. every checkpoint of several open_clip_train runs) -> one table.

```toml
# clipscale eval --collection runs.toml --suite SUITE
model_configs = ["my-bpe.json"]        # optional: custom open_clip architectures (relative paths)
[[entry]]
checkpoint = "logs/run-a"              # any eval SOURCE; a run folder means all its checkpoints;
                                       # glob patterns ("logs/*/checkpoints/epoch_*.pt") too
model = "my-bpe"                       # optional: the architecture, if the source does not say
samples_seen = 640                     # optional: for a single checkpoint that does not record it
name = "run-a"                         # optional: the table's run_id (default: the folder/file name)
```

All entries share one dataset store, so each image set is decoded once for the whole collection
and encoded once per model. The table has the columns of `clipscale results`; what a source does
not record (data size, seed, samples seen of a bare state dict) is null.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import read_toml

log = logging.getLogger(__name__)
ENTRY_KEYS = ("checkpoint", "model", "samples_seen", "name")


@dataclass(frozen=True)
class Entry:
    checkpoint: str
    name: str
    model: str | None = None
    samples_seen: int | None = None


@dataclass(frozen=True)
class Collection:
    path: Path
    entries: tuple[Entry, ...]
    model_configs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.entries:
            raise ClipscaleError(f"{self.path}: no [[entry]] tables: nothing to evaluate")


def _entry(where: str, table: Any, base: Path) -> Entry:
    if not isinstance(table, dict):
        raise ClipscaleError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(ENTRY_KEYS))
    if unknown:
        raise ClipscaleError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(ENTRY_KEYS)}")
    ckpt = table.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        raise ClipscaleError(f"{where}: 'checkpoint' must be a path (file, run folder, model folder or glob)")
    prefix = "local-dir:" if ckpt.startswith("local-dir:") else ""
    path = Path(os.path.expanduser(ckpt.removeprefix(prefix)))
    ckpt = prefix + str(path if path.is_absolute() else base / path)
    model, seen = table.get("model"), table.get("samples_seen")
    if model is not None and not isinstance(model, str):
        raise ClipscaleError(f"{where}: 'model' must be a model name")
    if seen is not None and (isinstance(seen, bool) or not isinstance(seen, int) or seen < 0):
        raise ClipscaleError(f"{where}: 'samples_seen' must be a non-negative integer")
    name = table.get("name", Path(ckpt.removeprefix(prefix)).name)
    if not isinstance(name, str) or not name:
        raise ClipscaleError(f"{where}: 'name' must be a non-empty string")
    return Entry(checkpoint=ckpt, name=name, model=model, samples_seen=seen)


def load_collection(path: str | os.PathLike) -> Collection:
    path = Path(path)
    doc = read_toml(path, what="collection file")
    unknown = sorted(set(doc) - {"entry", "model_configs"})
    if unknown:
        raise ClipscaleError(f"{path}: unknown key(s) {unknown}; valid: entry, model_configs")
    entries = doc.get("entry", [])
    configs = doc.get("model_configs", [])
    if not isinstance(entries, list) or not isinstance(configs, list) or \
            not all(isinstance(c, str) for c in configs):
        raise ClipscaleError(f"{path}: expected [[entry]] tables and model_configs = [\"FILE.json\", ...]")
    base = path.parent
    return Collection(path=path,
                      entries=tuple(_entry(f"{path}: entry[{i}]", e, base) for i, e in enumerate(entries)),
                      model_configs=tuple(p if p.is_absolute() else base / p for p in map(Path, configs)))


def expand(entry: Entry) -> list[tuple[str, str]]:
    """(source, checkpoint label) pairs of an entry: a run folder's checkpoints, a glob's matches."""
    from clipscale.evals.runner import run_checkpoints
    from clipscale.models.foreign import epoch_checkpoints, is_open_clip_train_run

    src = entry.checkpoint
    path = Path(src)
    if src.startswith("local-dir:") or (path / "open_clip_config.json").is_file():
        return [(src, path.name)]
    if path.is_dir():
        if list((path / "checkpoints").glob("samples_*.pt")):
            ckpts = run_checkpoints(path)
        elif is_open_clip_train_run(path):
            ckpts = epoch_checkpoints(path)
        else:
            raise ClipscaleError(f"{path}: neither a run directory nor a model folder")
        return [(str(c), c.name) for c in ckpts]
    if glob.has_magic(src):
        matches = sorted(glob.glob(src))
        if not matches:
            raise ClipscaleError(f"{src}: no file matches this pattern")
        return [(m, Path(m).name) for m in matches]
    if not path.is_file():
        raise ClipscaleError(f"{path}: no such checkpoint file, run folder or model folder")
    return [(src, path.name)]


def _mparams(model: str) -> tuple[float | None, float | None]:
    """(M params, M params without token/positional embeddings), None for a model without a config."""
    from clipscale.models.flops import count_flops

    try:
        report = count_flops(model)
    except ClipscaleError:
        return None, None
    return float(report.mparams), float(report.mparams_nonemb)


def tidy_rows(records: list[dict[str, Any]], *, run_id: str) -> list[dict[str, Any]]:
    """Rows with the columns of `clipscale results`; unknown values stay None."""
    seen = [r["samples_seen"] for r in records if r.get("samples_seen") is not None]
    run_samples = max(seen) if seen and len(seen) == len(records) else None
    rows = []
    for rec in records:
        samples = rec.get("samples_seen")
        params, nonemb = _mparams(rec["model"])
        row = {"run_id": run_id, "model": rec["model"], "params": params, "params_nonemb": nonemb,
               "gmacs": rec.get("gmacs"), "data_size": None, "samples_seen": samples,
               "compute": rec.get("compute"), "distribution": None, "dataset_train": None, "seed": None,
               "dataset": rec["dataset"], "task": rec["task"], "checkpoint": rec["checkpoint"],
               "run_samples_seen": run_samples,
               "final": None if run_samples is None else samples >= run_samples, "compute_group": None}
        metrics = (rec.get("metrics") or {}).items()
        row.update({k: v for k, v in metrics if isinstance(v, int | float) or v is None})
        rows.append(row)
    return rows


def evaluate_collection(collection: Collection, *, suite: Any, device: str = "cpu", batch_size: int = 256,
                        cache_dir: str | os.PathLike | None = None) -> Any:
    """Evaluate every entry; one DataFrame (columns of `clipscale results`), one row per record."""
    import pandas as pd

    from clipscale.evals.runner import (
        DatasetStore,
        PartialEvaluation,
        _as_suite,
        evaluate_checkpoint,
        partial_message,
    )
    from clipscale.models.registry import register_model_configs
    from clipscale.study.results import ID_COLUMNS, add_aggregates

    register_model_configs(collection.model_configs)
    suite = _as_suite(suite)
    store = DatasetStore()
    expanded = []
    for entry in collection.entries:  # every entry's checkpoints first: a typo fails before any evaluation
        pairs = expand(entry)
        if entry.samples_seen is not None and len(pairs) > 1:
            raise ClipscaleError(f"{collection.path}: entry {entry.name!r}: samples_seen applies to one "
                                 f"checkpoint, this entry has {len(pairs)}")
        expanded.append((entry, pairs))
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for entry, pairs in expanded:
        records: list[dict[str, Any]] = []
        for src, label in pairs:
            try:  # one entry's bad checkpoint or model must not cost the others' evaluations
                records += evaluate_checkpoint(
                    src, suite=suite, device=device, batch_size=batch_size, cache_dir=cache_dir, store=store,
                    checkpoint_label=label, model=entry.model, samples_seen=entry.samples_seen)
            except ClipscaleError as exc:
                log.warning("%s: entry %r: skipped %s: %s", collection.path, entry.name, label, exc)
                failed.append(f"entry {entry.name!r}: {exc}")
        rows += tidy_rows(records, run_id=entry.name)
    if any(r["compute"] is None for r in rows):
        log.warning("%s: compute unknown for some rows (no samples seen): left null", collection.path)
    df = add_aggregates(pd.DataFrame(rows, columns=None if rows else list(ID_COLUMNS)), suite.aggregates)
    metrics = sorted(c for c in df.columns if c not in ID_COLUMNS)
    df = df[[*ID_COLUMNS, *metrics]]
    if failed:
        total = sum(len(pairs) for _, pairs in expanded)
        raise PartialEvaluation(partial_message(collection.path, failed, total, "table written"), df)
    return df


def write_table(df: Any, out: str | os.PathLike) -> Path:
    """Atomically, in the format the extension names (.csv, .jsonl/.json, .parquet)."""
    from clipscale.io import atomic_write_bytes
    from clipscale.study.results import table_bytes

    out = Path(out)
    suffix = out.suffix.lower()
    fmt = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix)
    if fmt is None:
        raise ClipscaleError(f"{out}: table format by extension: .csv, .jsonl, .json or .parquet")
    atomic_write_bytes(out, table_bytes(df, fmt))
    return out
