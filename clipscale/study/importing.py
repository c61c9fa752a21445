"""`clipscale import`: the runs you already have, as clipscale run directories and one results table.

* An open_clip_train run folder (`logs/NAME/`: params.txt + checkpoints/epoch_N.pt) becomes a run
  directory whose `checkpoints/samples_<S>.pt` are clipscale checkpoints of the same weights (the
  optimizer is dropped), with the model name and samples seen from params.txt (train_num_samples x
  epoch, else optimizer steps x global batch). `clipscale eval RUN_DIR` then evaluates it as any run.
* A folder of CLIP_benchmark result JSONs (one per model x dataset: `dataset`, `model`,
  `pretrained`, `task`, `metrics`) becomes one run directory per (model, pretrained) holding those
  records. Samples seen come only from what the pretrained tag states (`..._s34b_...` = 34e9);
  otherwise samples seen and compute are null, with a warning: never a made-up number.

`--out DIR` writes DIR/runs/<run_id>/ and DIR/results.csv (the columns of `clipscale results`);
`--out STUDY.toml` writes into the study's runs/ and lists the runs in OUTPUT_DIR/imported.json, so
`clipscale results/report STUDY.toml` include them. Importing again updates in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_bytes, atomic_write_json, dumps

log = logging.getLogger(__name__)
SAMPLES_TAG = re.compile(r"(?:^|[_-])s(\d+(?:\.\d+)?)([kmb])(?=[_-]|$)", re.IGNORECASE)
SCALE = {"k": 1e3, "m": 1e6, "b": 1e9}
BENCH_KEYS = ("dataset", "model", "metrics")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "run"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def samples_from_tag(pretrained: str) -> int | None:
    """Samples seen that an OpenCLIP pretrained tag states (laion2b_s34b_b79k -> 34e9), else None."""
    match = SAMPLES_TAG.search(Path(pretrained).name)
    return None if match is None else int(float(match.group(1)) * SCALE[match.group(2).lower()])


def _flops(model: str) -> tuple[float | None, float | None, float | None]:
    """(GMACs, M params, M params without token/positional embeddings), all None for an unknown model."""
    from clipscale.models.flops import count_flops
    from clipscale.models.registry import list_models

    if model not in list_models():
        log.warning("model %r is not a known architecture: gmacs, params and compute are null "
                    "(register it with --model-config FILE.json)", model)
        return None, None, None
    report = count_flops(model)
    return float(report.gmacs), float(report.mparams), float(report.mparams_nonemb)


def import_open_clip_train(folder: Path, runs_dir: Path) -> str:
    """One open_clip_train run folder -> RUNS_DIR/<name>-<hash>/; returns the run id."""
    from clipscale.models.checkpoint import save_checkpoint
    from clipscale.models.foreign import epoch_checkpoints, load_source, parse_params

    if not (folder / "params.txt").is_file():
        raise ClipscaleError(f"{folder}: no params.txt: the model and samples seen of this run are unknown")
    params = parse_params(folder / "params.txt")
    run_id = f"{_safe(str(params.get('name') or folder.name))}-{_digest(str(folder.resolve()))}"
    run_dir = runs_dir / run_id
    last: Any = None
    for ckpt in epoch_checkpoints(folder):
        loaded = load_source(ckpt)
        if loaded.samples_seen is None:
            raise ClipscaleError(f"{ckpt}: samples seen unknown (params.txt has no train_num_samples and the "
                                 "optimizer state no step count)")
        dest = run_dir / "checkpoints" / f"samples_{loaded.samples_seen:012d}.pt"
        if not dest.exists():
            save_checkpoint(dest, model=loaded.model, model_name=loaded.model_name,
                            model_config=loaded.meta["model_config"], tokenizer=loaded.tokenizer,
                            step=loaded.meta.get("steps") or 0, samples_seen=loaded.samples_seen,
                            compute=loaded.compute,
                            gmacs=loaded.meta["gmacs"],
                            extra={"source": str(ckpt.resolve()), "source_format": "open_clip_train",
                                   "epoch": loaded.meta.get("epoch")})
        last = loaded
    per_epoch, epochs = params.get("train_num_samples"), params.get("epochs")
    known = isinstance(per_epoch, int) and isinstance(epochs, int)
    planned = per_epoch * epochs if known else last.samples_seen
    batch = [params.get(k) for k in ("batch_size", "world_size", "accum_freq")]
    global_batch = batch[0] * (batch[1] or 1) * (batch[2] or 1) if isinstance(batch[0], int) else None
    data = str(params.get("train_data"))
    _, mparams, nonemb = _flops(last.model_name)
    cell = {"run_id": run_id, "model": last.model_name, "dataset": data, "distribution": data,
            "data_size": None, "samples_seen": planned, "seed": params.get("seed"),
            "gmacs": last.meta["gmacs"], "mparams": mparams, "mparams_nonemb": nonemb,
            "compute": last.meta["gmacs"] * planned, "compute_group": None,
            "train": {"lr": params.get("lr"), "batch_size": global_batch, "epochs": epochs,
                      "warmup": params.get("warmup"), "wd": params.get("wd"),
                      "precision": params.get("precision")},
            "source": str(folder.resolve()), "source_format": "open_clip_train"}
    atomic_write_json(run_dir / "run.json", cell)
    atomic_write_bytes(run_dir / "params.txt", (folder / "params.txt").read_bytes())
    return run_id


def _read_bench(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClipscaleError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ClipscaleError(f"{path}: not a CLIP_benchmark result (expected a JSON object)")
    for key in BENCH_KEYS:
        if key not in doc:
            raise ClipscaleError(f"{path}: not a CLIP_benchmark result: no key {key!r}")
    if not isinstance(doc["metrics"], dict) or not isinstance(doc["model"], str):
        raise ClipscaleError(f"{path}: key 'metrics' must be an object and 'model' a string")
    return doc


def _read_folder(folder: Path, files: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """The result JSONs of a folder; other or broken JSON files are skipped and counted (a warning),
    so one torn file does not stop the import of the rest. None readable is an error."""
    docs, skipped = [], []
    for file in files:
        try:
            docs.append((file, _read_bench(file)))
        except ClipscaleError as exc:
            skipped.append(str(exc))
    if not docs:
        raise ClipscaleError(f"{folder}: none of its {len(files)} JSON file(s) is a CLIP_benchmark result "
                             f"(first: {skipped[0]})")
    if skipped:
        log.warning("%s: skipped %d of %d JSON file(s) that are not CLIP_benchmark results (first: %s)",
                    folder, len(skipped), len(files), skipped[0])
    return docs


def import_clip_benchmark(files: list[Path], runs_dir: Path, *, folder: Path | None = None) -> list[str]:
    """CLIP_benchmark result JSONs -> one run directory per (model, pretrained); returns run ids. Files
    named one by one must all be results; those found in a `folder` are skipped (and counted) if not."""
    read = _read_folder(folder, files) if folder is not None else [(f, _read_bench(f)) for f in files]
    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for file, doc in read:
        groups.setdefault((doc["model"], str(doc.get("pretrained") or "")), []).append((file, doc))
    ids = []
    for (model_arg, pretrained), docs in sorted(groups.items()):
        model = model_arg.replace("/", "-")  # CLIP_benchmark accepts OpenAI's ViT-B/32 spelling
        gmacs, mparams, nonemb = _flops(model)
        samples = samples_from_tag(pretrained) if pretrained else None
        if samples is None:
            log.warning("%s %s: samples seen unknown (the pretrained tag states none): samples_seen and "
                        "compute are null", model, pretrained or "(no pretrained tag)")
        compute = None if samples is None or gmacs is None else gmacs * samples
        run_id = f"{_safe(model)}_{_safe(Path(pretrained).name or 'none')}-{_digest(pretrained)}"
        records = [{"model": model, "checkpoint": pretrained, "checkpoint_hash": _digest(file.read_text()),
                    "source_format": "clip_benchmark", "gmacs": gmacs, "samples_seen": samples,
                    "compute": compute, "dataset": doc["dataset"], "task": doc.get("task"),
                    "metrics": doc["metrics"], "source": str(file.resolve())} for file, doc in docs]
        distribution = Path(pretrained).name.split("_")[0] if pretrained else None
        cell = {"run_id": run_id, "model": model, "dataset": distribution, "distribution": distribution,
                "data_size": None, "samples_seen": samples, "seed": None, "gmacs": gmacs, "mparams": mparams,
                "mparams_nonemb": nonemb, "compute": compute, "compute_group": None, "train": {},
                "pretrained": pretrained, "source_format": "clip_benchmark"}
        run_dir = runs_dir / run_id
        atomic_write_json(run_dir / "run.json", cell)
        atomic_write_bytes(run_dir / "results.jsonl", "".join(dumps(r) + "\n" for r in records).encode())
        ids.append(run_id)
    return ids


def _import_one(source: Path, runs_dir: Path) -> list[str]:
    from clipscale.models.foreign import is_open_clip_train_run

    if is_open_clip_train_run(source):
        return [import_open_clip_train(source, runs_dir)]
    if source.is_dir():
        files = sorted(source.rglob("*.json"))
        if not files:
            raise ClipscaleError(f"{source}: neither an open_clip_train run folder (params.txt, "
                                 "checkpoints/epoch_*.pt) nor a folder of CLIP_benchmark result JSONs")
        return import_clip_benchmark(files, runs_dir, folder=source)
    if source.is_file() and source.suffix == ".json":
        return import_clip_benchmark([source], runs_dir)
    raise ClipscaleError(f"{source}: no such run folder or CLIP_benchmark result folder/file")


def results_table(runs_dir: Path, run_ids: list[str]) -> Any:
    """The tidy table of these run directories, columns as `clipscale results`."""
    import pandas as pd

    from clipscale.study.results import ID_COLUMNS, run_rows

    rows = [row for rid in run_ids for row in run_rows(runs_dir / rid)]
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(ID_COLUMNS))
    metrics = sorted(c for c in df.columns if c not in ID_COLUMNS)
    return df[[*ID_COLUMNS, *metrics]]


def import_runs(sources: list[str | Path], *, out: str | Path,
                echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Import every source into `out` (a study file or a directory); returns run ids and the table path."""
    from clipscale.study.results import IMPORTED_FILE, table_bytes

    out = Path(out)
    study = None
    if out.suffix == ".toml":
        from clipscale.study.spec import load_study

        study = load_study(out)
        root = study.output_dir
    else:
        root = out
    runs_dir = root / "runs"
    ids = list(dict.fromkeys(rid for src in sources for rid in _import_one(Path(src), runs_dir)))
    if study is not None:
        listed = root / IMPORTED_FILE
        try:
            known = json.loads(listed.read_text(encoding="utf-8"))["runs"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            known = []
        atomic_write_json(listed, {"runs": [*known, *(r for r in ids if r not in known)]})
        echo(f"imported {len(ids)} run(s) into {runs_dir}; `clipscale results {out}` includes them")
        return {"runs": ids, "table": None}
    all_ids = sorted(p.parent.name for p in runs_dir.glob("*/run.json"))
    df = results_table(runs_dir, all_ids)
    if df["compute"].isna().any():
        log.warning("%s: compute is null for %d of %d rows (samples seen unknown)", root / "results.csv",
                    int(df["compute"].isna().sum()), len(df))
    table = root / "results.csv"
    atomic_write_bytes(table, table_bytes(df, "csv"))
    echo(f"imported {len(ids)} run(s) into {runs_dir}; table {table} ({len(df)} rows)")
    return {"runs": ids, "table": table}
