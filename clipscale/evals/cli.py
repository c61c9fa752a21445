"""`clipscale eval SOURCE --suite SUITE` and `eval --collection FILE.toml`: stdlib only at import time."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from clipscale.jsonout import add_json_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint, a run directory or a collection of models on a suite",
        description="Zero-shot classification/retrieval, linear probe and fine-tuning on local data. "
        "SOURCE: a clipscale checkpoint or run directory (all checkpoints/samples_*.pt, records appended to "
        "RUN_DIR/results.jsonl, triples already there skipped); an open_clip_train checkpoint or run folder "
        "(logs/NAME/: every checkpoints/epoch_*.pt, model and samples seen from params.txt); an open_clip "
        "hf-hub folder or local-dir:PATH; a .safetensors/.bin/.pt state dict (with --model) or an "
        "OpenAI-format state dict. Records go to stdout, one line each (JSON lines with --json). "
        "--collection FILE.toml evaluates "
        "many models into one results table.")
    p.add_argument("source", metavar="SOURCE", nargs="?", help="checkpoint, run directory or model folder")
    p.add_argument("--suite", required=True, help="suite TOML file, or a built-in suite name (e.g. synth)")
    p.add_argument("--data-root", default=None,
                   help="where the suite's relative dataset paths resolve (required by built-in suites)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="architecture of a source that does not record it (a bare state dict)")
    p.add_argument("--model-config", action="append", default=[], metavar="FILE.json",
                   help="register an open_clip model config (name = file stem) for this process; repeatable")
    p.add_argument("--samples-seen", type=int, default=None, metavar="N",
                   help="samples seen of a single checkpoint whose source does not record it (sets compute)")
    p.add_argument("--collection", default=None, metavar="FILE.toml",
                   help="evaluate every [[entry]] of a collection file into one results table")
    p.add_argument("--out", default=None,
                   help="also write this invocation's records to FILE (JSON lines); with --collection, the "
                        "results table (.csv, .jsonl or .parquet) (default: no file; with --collection, "
                        "FILE.results.csv beside it)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="images (or captions) encoded per forward pass")
    p.add_argument("--device", default="auto",
                   help="where to evaluate: auto = cuda if available, else cpu (as train and a study's "
                        "evaluations); or cpu, cuda, cuda:1, ...")
    p.add_argument("--cache-dir", default=None, help="on-disk image-feature cache (content-hash keyed)")
    add_json_flag(p)  # the records as JSON lines (as written to --out): see the description
    p.set_defaults(handler=_handle_eval)


def _device(name: str) -> str:
    """`--device auto`: cuda if available, else cpu, as `train --device auto` and a study's evaluations."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _handle_eval(args: argparse.Namespace) -> int:
    from clipscale.errors import ClipscaleError
    from clipscale.evals.runner import PartialEvaluation, evaluate_checkpoint, evaluate_run
    from clipscale.evals.suite import load_suite
    from clipscale.models.registry import register_model_configs

    register_model_configs(args.model_config)
    if args.samples_seen is not None and args.samples_seen < 0:
        raise ClipscaleError(f"--samples-seen must be >= 0, got {args.samples_seen}")
    suite = load_suite(args.suite, root=args.data_root)
    common = {"suite": suite, "device": _device(args.device), "batch_size": args.batch_size,
              "cache_dir": args.cache_dir}
    if args.collection is not None:
        return _handle_collection(args, common)
    if args.source is None:
        raise ClipscaleError("eval needs a SOURCE (checkpoint, run directory, model folder) or --collection")
    source = args.source
    target = Path(source)
    is_model_dir = source.startswith("local-dir:") or (target / "open_clip_config.json").is_file()
    if target.is_dir() and not is_model_dir:
        if args.samples_seen is not None:
            raise ClipscaleError("--samples-seen applies to one checkpoint; a run directory records its own")
        skipped: list[Path] = []
        try:
            with _run_lock(target):
                records = evaluate_run(target, model=args.model, on_skip=skipped.append, **common)
        except PartialEvaluation as exc:  # what was evaluated is written out before the error
            _write_records(exc.result, args.out, as_json=args.json)
            raise
        finally:
            _say_skipped(target, skipped, suite.name)
    elif target.is_file() or is_model_dir:
        records = evaluate_checkpoint(source, model=args.model, samples_seen=args.samples_seen, **common)
    else:
        raise ClipscaleError(f"{target}: no such checkpoint file or run directory")
    _write_records(records, args.out, as_json=args.json)
    return 0


def _say_skipped(run_dir: Path, skipped: list[Path], suite: str) -> None:
    """One stderr line for checkpoints already evaluated (stdout keeps only records, --json included)."""
    if skipped:
        results = run_dir / "results.jsonl"
        print(f"{len(skipped)} checkpoint(s) already evaluated on suite {suite} ({results}): skipped; to "
              "evaluate one again, remove its records from that file", file=sys.stderr)


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Hold a clipscale run directory's lock while appending to its results.jsonl, so two evals (or an
    eval and `clipscale run`) never append the same records; the second refuses in one line. Another
    tool's run folder (open_clip_train logs/NAME/) is only read, never locked or written."""
    from clipscale.errors import ClipscaleError
    from clipscale.models.foreign import is_open_clip_train_run
    from clipscale.study.state import lock_holder, try_lock

    if is_open_clip_train_run(run_dir) and not list((run_dir / "checkpoints").glob("samples_*.pt")):
        yield
        return
    lock = try_lock(run_dir)
    if lock is None:
        who = lock_holder(run_dir) or {}
        raise ClipscaleError(f"{run_dir}: locked by pid {who.get('pid', '?')} on {who.get('host', '?')} "
                             "(`clipscale run` or another `clipscale eval` is writing its results); "
                             "try again when it ends")
    try:
        yield
    finally:
        lock.release()


def _write_records(records: list[dict], out: str | None, *, as_json: bool) -> None:
    from clipscale.io import atomic_write_text, dumps

    lines = "".join(dumps(r) + "\n" for r in records)
    sys.stdout.write(lines if as_json else "".join(record_line(r) + "\n" for r in records))
    if out:
        atomic_write_text(out, lines)


def record_line(record: dict) -> str:
    """`tiny-S0 @ 6,400 samples  synth_shape zeroshot_classification: acc1 0.512, acc5 0.98, ...`"""
    seen = record.get("samples_seen")
    where = f" @ {seen:,} samples" if isinstance(seen, int) else ""
    metrics = ", ".join(_metric_text(k, v) for k, v in record.get("metrics", {}).items()
                        if not (k == "acc5" and _undefined(v)))  # top-5 of < 5 classes: no such metric
    return f"{record.get('model')}{where}  {record.get('dataset')} {record.get('task')}: {metrics}"


def _undefined(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _metric_text(name: str, value: object) -> str:
    if _undefined(value):
        return f"{name} n/a"
    return f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"


def _handle_collection(args: argparse.Namespace, common: dict) -> int:
    from clipscale.errors import ClipscaleError
    from clipscale.evals.collection import evaluate_collection, load_collection, write_table

    if args.source is not None or args.model is not None or args.samples_seen is not None:
        raise ClipscaleError("--collection takes no SOURCE, --model or --samples-seen "
                             "(set them per [[entry]])")
    from clipscale.evals.runner import PartialEvaluation

    collection = load_collection(args.collection)
    out = Path(args.out) if args.out else collection.path.with_suffix(".results.csv")
    try:
        table = evaluate_collection(collection, **common)
    except PartialEvaluation as exc:  # the table of the entries that were evaluated, then the error
        print(write_table(exc.result, out))
        raise
    print(write_table(table, out))
    return 0
