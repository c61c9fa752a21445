"""Run a suite on checkpoints: one strict-JSON record per (checkpoint, dataset, task).

A checkpoint is any source `models.foreign.load_source` reads (clipscale, open_clip_train, hf-hub
folders, bare or OpenAI state dicts); records say which (`source_format`), with `gmacs`, and
`samples_seen`/`compute` null where the source does not record them.

`evaluate_run` evaluates every `checkpoints/samples_*.pt` of a run directory, appends each record
to `RUN_DIR/results.jsonl` as soon as it exists (an interrupted eval loses nothing) and skips the
(checkpoint content hash, dataset, task) triples already there. Datasets are read once and their
decoded pixels shared by all checkpoints; image features are computed once per checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from clipscale.errors import CheckpointError, ClipscaleError
from clipscale.evals.datasets import EvalDataset
from clipscale.evals.embed import Embedder, file_sha256, shared_pixel_cache
from clipscale.evals.registry import make_evaluator
from clipscale.evals.suite import Job, Suite, load_suite
from clipscale.io import append_jsonl, read_jsonl

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
DoneKey = tuple[str, str, str]  # (checkpoint_hash, dataset, task)


class PartialEvaluation(CheckpointError):
    """Some checkpoints could not be evaluated; `result` is what the call returns for the others (a run's
    records, a collection's table), so a caller can keep it before reporting the error."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


def partial_message(where: object, failed: list[str], total: int, kept: str) -> str:
    others = total - len(failed)
    done = f"the other {others} were evaluated ({kept}); " if others else ""
    return f"{where}: {len(failed)} of {total} checkpoint(s) could not be evaluated; {done}first: {failed[0]}"


class DatasetStore:
    """Loads each (dataset, split) once; a train split is attached as `dataset.train`."""

    def __init__(self) -> None:
        self._sets: dict[tuple[Any, str], EvalDataset] = {}
        self.pixels = shared_pixel_cache()  # decoded pixels outlive the store: one decode per process

    def get(self, job: Job) -> EvalDataset:
        spec = job.dataset
        key = (spec, spec.split)
        if key not in self._sets:
            self._sets[key] = spec.load()
        dataset = self._sets[key]
        if job.needs_train and dataset.train is None:
            dataset.train = spec.load(spec.train_split)
        return dataset


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipscaleError(f"device {device!r} requested but CUDA is not available")


def _as_suite(suite: Suite | str | os.PathLike) -> Suite:
    return suite if isinstance(suite, Suite) else load_suite(suite)


def _run_job(job: Job, bundle: Embedder, store: DatasetStore) -> tuple[dict[str, Any], EvalDataset, dict]:
    t0 = time.perf_counter()
    dataset = store.get(job)
    t1 = time.perf_counter()
    metrics = make_evaluator(job.evaluator, job.options).evaluate(bundle, dataset)
    t2 = time.perf_counter()
    return metrics, dataset, {"dataset_s": t1 - t0, "evaluate_s": t2 - t1}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    suite: Suite | str | os.PathLike,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    skip: Iterable[DoneKey] = (),
    on_record: Callable[[dict[str, Any]], None] | None = None,
    store: DatasetStore | None = None,
    checkpoint_label: str | None = None,
    model: str | None = None,
    samples_seen: int | None = None,
) -> list[dict[str, Any]]:
    """Evaluate one model source on every (dataset, task) of `suite` not in `skip`.

    `checkpoint` is any source `clipscale.models.foreign.load_source` reads (a clipscale or
    open_clip_train checkpoint, a state dict, an hf-hub folder or `local-dir:` path); `model` and
    `samples_seen` supply what a source does not record.
    """
    from clipscale.models.foreign import load_source, weights_path
    from clipscale.models.integrity import check_finite_weights

    _check_device(device)
    if batch_size < 1:
        raise ClipscaleError(f"batch size must be >= 1; got {batch_size}")
    suite = _as_suite(suite)
    ckpt_hash = file_sha256(weights_path(checkpoint))
    done = set(skip)
    todo = [job for job in suite.jobs if (ckpt_hash, job.dataset.name, job.task) not in done]
    if not todo:
        return []
    t0 = time.perf_counter()
    loaded = load_source(checkpoint, model=model, samples_seen=samples_seen, device=device)
    check_finite_weights(loaded.model, checkpoint)  # NaN weights would give chance-level metrics, exit 0
    load_s = time.perf_counter() - t0
    store = store or DatasetStore()
    bundle = Embedder(loaded.model, loaded.tokenizer, checkpoint_hash=ckpt_hash,
                      model_config=loaded.meta["model_config"], device=device, batch_size=batch_size,
                      cache_dir=cache_dir, pixel_cache=store.pixels)
    head = {"model": loaded.model_name, "checkpoint": checkpoint_label or str(checkpoint),
            "checkpoint_hash": ckpt_hash, "source_format": loaded.source_format,
            "gmacs": loaded.meta.get("gmacs"), "samples_seen": loaded.samples_seen, "compute": loaded.compute}
    records = []
    for job in todo:
        metrics, dataset, timings = _run_job(job, bundle, store)
        n_valid, undecodable = bundle.counts.get(dataset.fingerprint, (len(dataset), 0))
        record = {**head, "dataset": job.dataset.name, "task": job.task, "metrics": metrics,
                  "n_samples": n_valid, "skipped": undecodable + dataset.lost,
                  "timings": {"checkpoint_load_s": load_s, **timings}}
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def run_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """A run's checkpoint points, by samples seen (latest.pt is resume state, not a point)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = sorted(ckpt_dir.glob("samples_*.pt"))
    if not found:
        raise ClipscaleError(f"{ckpt_dir}: no checkpoints/samples_*.pt to evaluate")
    return found


def done_keys(results_file: str | os.PathLike) -> set[DoneKey]:
    return {(r["checkpoint_hash"], r["dataset"], r["task"]) for r in read_jsonl(results_file)
            if {"checkpoint_hash", "dataset", "task"} <= set(r)}


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    suite: Suite | str | os.PathLike,
    device: str = "cpu",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    model: str | None = None,
    on_skip: Callable[[Path], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every checkpoint of a run; new records are appended to RUN_DIR/results.jsonl.
    `on_skip` gets each checkpoint whose every (dataset, task) is already there (nothing to do).

    An open_clip_train run folder (logs/NAME/) is evaluated checkpoint by checkpoint too, but its
    records are only returned: clipscale never writes into another tool's folder (`clipscale
    import` makes a clipscale run directory of it).
    """
    from clipscale.models.foreign import epoch_checkpoints, is_open_clip_train_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ClipscaleError(f"{run_dir}: run directory not found")
    suite = _as_suite(suite)
    store = DatasetStore()
    common = {"suite": suite, "device": device, "batch_size": batch_size, "cache_dir": cache_dir,
              "store": store, "model": model}
    if is_open_clip_train_run(run_dir) and not list((run_dir / "checkpoints").glob("samples_*.pt")):
        checkpoints, kept = epoch_checkpoints(run_dir), "records printed"
    else:
        results = run_dir / RESULTS_FILE
        common.update(skip=done_keys(results), on_record=lambda r: append_jsonl(results, r))
        checkpoints, kept = run_checkpoints(run_dir), f"records in {results}"
    records: list[dict[str, Any]] = []
    unusable: list[str] = []
    for ckpt in checkpoints:
        try:
            new = evaluate_checkpoint(ckpt, **common, checkpoint_label=str(ckpt.relative_to(run_dir)))
            if not new and on_skip is not None:
                on_skip(ckpt)
            records += new
        except CheckpointError as exc:  # one bad file: evaluate the others, then say so
            log.warning("skipped: %s", exc)
            unusable.append(str(exc))
    if unusable:
        raise PartialEvaluation(partial_message(run_dir, unusable, len(checkpoints), kept), records)
    return records
