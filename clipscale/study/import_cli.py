"""`clipscale import SOURCE... --out STUDY_OR_DIR`: standard library only at import time."""

from __future__ import annotations

import argparse
from typing import Any

from clipscale.jsonout import add_json_flag, emit, progress_to_stderr


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import", help="bring open_clip_train runs and CLIP_benchmark results into clipscale",
        description="Turn open_clip_train run folders (logs/NAME/: params.txt + checkpoints/epoch_*.pt) into "
        "clipscale run directories (clipscale checkpoints of the same weights, samples seen from "
        "params.txt), "
        "and folders of CLIP_benchmark result JSONs into run directories of their records. --out DIR writes "
        "DIR/runs/ and DIR/results.csv (the columns of `clipscale results`, for `clipscale fit`); --out "
        "STUDY.toml adds the runs to that study's results and report. Unknown samples seen / compute are "
        "null, with a warning.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="run folder, CLIP_benchmark result folder or JSON")
    p.add_argument("--out", required=True, metavar="STUDY_OR_DIR", help="a study file or an output directory")
    p.add_argument("--model-config", action="append", default=[], metavar="FILE.json",
                   help="register an open_clip model config (name = file stem) first; repeatable")
    add_json_flag(p)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from clipscale.models.registry import register_model_configs
    from clipscale.study.importing import import_runs

    with progress_to_stderr(args.json):
        register_model_configs(args.model_config)
        done = import_runs(args.sources, out=args.out)
    if args.json:
        emit({"out": args.out, "runs": done["runs"], "table": done["table"]})
    return 0
