"""`clipscale train CONFIG.toml [--key value ...]`: standard library only at import time."""

from __future__ import annotations

import argparse
import typing
from typing import Any


def register(subparsers: Any) -> None:
    from clipscale.train.config import FIELD_NAMES, TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train one CLIP model by samples seen (run under torchrun for several GPUs)",
        description="Train one CLIP model. Every TrainConfig key can be set in the TOML file or as "
                    "--key value (dashes or underscores); command-line values win. Bare flags mean true.",
    )
    parser.add_argument("config", nargs="?", help="TOML file of TrainConfig keys (optional)")
    hints = typing.get_type_hints(TrainConfig)
    for name in FIELD_NAMES:
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        kind = str(hints[name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
        parser.add_argument(*flags, dest=name, metavar="V", nargs="?", const="true", default=None, help=kind)
    parser.set_defaults(handler=_handle)


def overrides_from_args(args: argparse.Namespace) -> dict[str, str]:
    from clipscale.train.config import FIELD_NAMES

    return {name: getattr(args, name) for name in FIELD_NAMES if getattr(args, name, None) is not None}


def _handle(args: argparse.Namespace) -> int:
    import signal

    from clipscale.train import load_train_config, train

    config = load_train_config(args.config, overrides_from_args(args))
    summary = train(config)
    print(f"{summary['state']}: {config.model}, {summary['samples_seen']:,} samples seen, compute "
          f"{summary['compute']:.4g} GMACs, {summary['wall_time_s']:.1f} s; run dir {config.output_dir}")
    if summary["state"] == "interrupted":
        return 128 + int(signal.Signals[summary["signal"]])
    return 0
