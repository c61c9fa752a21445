"""`clipscale eval CHECKPOINT_OR_RUN_DIR --suite SUITE`: standard library only at import time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint or every checkpoint of a run directory on a suite",
        description="Zero-shot classification/retrieval, linear probe and fine-tuning on local data. "
        "A run directory: all checkpoints/samples_*.pt, records appended to RUN_DIR/results.jsonl, "
        "(checkpoint, dataset, task) triples already there are skipped. Records go to stdout as JSON lines.")
    p.add_argument("target", metavar="CHECKPOINT_OR_RUN_DIR")
    p.add_argument("--suite", required=True, help="suite TOML file, or a built-in suite name (e.g. synth)")
    p.add_argument("--data-root", default=None,
                   help="where the suite's relative dataset paths resolve (required by built-in suites)")
    p.add_argument("--out", default=None, help="also write this invocation's records to FILE (JSON lines)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--cache-dir", default=None, help="on-disk image-feature cache (content-hash keyed)")
    p.set_defaults(handler=_handle_eval)


def _handle_eval(args: argparse.Namespace) -> int:
    from clipscale.errors import ClipscaleError
    from clipscale.evals.runner import evaluate_checkpoint, evaluate_run
    from clipscale.evals.suite import load_suite
    from clipscale.io import atomic_write_text, dumps

    suite = load_suite(args.suite, root=args.data_root)
    target = Path(args.target)
    common = {"suite": suite, "device": args.device, "batch_size": args.batch_size,
              "cache_dir": args.cache_dir}
    if target.is_dir():
        records = evaluate_run(target, **common)
    elif target.is_file():
        records = evaluate_checkpoint(target, **common)
    else:
        raise ClipscaleError(f"{target}: no such checkpoint file or run directory")
    lines = "".join(dumps(r) + "\n" for r in records)
    sys.stdout.write(lines)
    if args.out:
        atomic_write_text(args.out, lines)
    return 0
