"""`clipscale train CONFIG.toml [--key value ...]`: standard library only at import time."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from clipscale.jsonout import add_json_flag, emit, progress_to_stderr


def register(subparsers: Any) -> None:
    from clipscale.confighelp import fields_of, help_line

    parser = subparsers.add_parser(
        "train",
        help="train one CLIP model by samples seen (run under torchrun for several GPUs)",
        description="Train one CLIP model. Every TrainConfig key can be set in the TOML file or as "
                    "--key value (dashes or underscores); command-line values win. A bare switch "
                    "(--keep-latest) means true. All keys: docs/config.md.",
    )
    parser.add_argument("config", nargs="?", help="TOML file of TrainConfig keys (optional)")
    for name, f in fields_of(_train_config()).items():
        if name == "model_configs":  # --model-config FILE.json, repeatable, as in eval/import/models
            parser.add_argument("--model-config", dest="model_configs", action="append", default=None,
                                metavar="FILE.json", help=_escape(help_line(f)))
            parser.add_argument("--model-configs", "--model_configs", dest="model_configs_list",
                                metavar="A,B", default=None, help=argparse.SUPPRESS)  # the old spelling
            continue
        const = "true" if _is_bool(f) else NO_VALUE  # bare flags mean true for switches only
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=_metavar(f), nargs="?",
                            const=const, default=None, help=_escape(help_line(f)))
        if "_" in name:  # --data_mode works too, unlisted
            parser.add_argument(f"--{name}", dest=name, nargs="?", const=const, default=None,
                                help=argparse.SUPPRESS)
    add_json_flag(parser)
    parser.set_defaults(handler=_handle)


# The value argparse stores for a bare non-switch flag (`--batch-size` followed by nothing or by another
# flag): refused in one line by `overrides_from_args`, where it used to read as "true".
NO_VALUE = "\0no value"


def _is_bool(f: Any) -> bool:
    return typing.get_type_hints(_train_config())[f.name] is bool


def _value_kind(name: str) -> str:
    """What a flag's value is, in words, for the 'needs a value' error."""
    from clipscale.confighelp import fields_of

    f = fields_of(_train_config())[name]
    choices = f.metadata.get("choices", ())
    hint = typing.get_type_hints(_train_config())[name]
    if typing.get_origin(hint) is list:
        items = ", ".join(choices) if choices else {float: "numbers"}.get(typing.get_args(hint)[0], "names")
        return f"a comma-separated list of {items}"
    if choices:
        return f"one of {', '.join(choices)}"
    kinds = {int: "an integer", float: "a number", str: "a string"}
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    words = " or ".join(kinds.get(a, "a value") for a in args)
    return words + (" or none" if type(None) in typing.get_args(hint) else "")


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


def _train_config() -> type:
    from clipscale.train.config import TrainConfig

    return TrainConfig


def _metavar(f: Any) -> str:
    """{a,b} for a field with choices, A,B for a list, else the field's type (INT, FLOAT, BOOL, STR)."""
    choices = f.metadata.get("choices", ())
    hint = typing.get_type_hints(_train_config())[f.name]
    if typing.get_origin(hint) is list:
        return ",".join(choices) if choices else "A,B"
    if choices:
        return "{" + ",".join(choices) + "}"
    names = [getattr(a, "__name__", "list") for a in typing.get_args(hint) if a is not type(None)] or [
        getattr(hint, "__name__", "V")]
    return names[0].upper()


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from clipscale.errors import ClipscaleError
    from clipscale.train.config import FIELD_NAMES

    out: dict[str, Any] = {name: getattr(args, name) for name in FIELD_NAMES
                           if getattr(args, name, None) is not None}
    for name, value in out.items():
        if value == NO_VALUE:
            raise ClipscaleError(f"--{name.replace('_', '-')} needs a value ({_value_kind(name)})")
    old = getattr(args, "model_configs_list", None)
    if old is not None:
        listed = [x.strip() for x in old.split(",") if x.strip()]
        out["model_configs"] = [*out.get("model_configs", []), *listed]
    return out


def _warn_rounding(samples: int, batch: int) -> None:
    """The trainer trains whole batches: say so when that changes samples_seen, as a study's plan does
    (study/grid.py), once (rank 0 under torchrun)."""
    import logging
    import os

    rounded = -(-samples // batch) * batch
    if rounded != samples and os.environ.get("RANK", "0") == "0":
        logging.getLogger("clipscale.train").warning(
            "train config field 'samples_seen': %d is not a whole number of batches (batch_size %d); "
            "trained as %d (%d steps)", samples, batch, rounded, rounded // batch)


def _handle(args: argparse.Namespace) -> int:
    import signal

    from clipscale.train import load_train_config, train

    with progress_to_stderr(args.json):
        config = load_train_config(args.config, overrides_from_args(args))
        _warn_rounding(config.samples_seen, config.batch_size)
        summary = train(config)
    if args.json:
        emit({"model": config.model, "output_dir": config.output_dir, **summary})
    else:
        print(f"{summary['state']}: {config.model}, {summary['samples_seen']:,} samples seen, compute "
              f"{summary['compute']:.4g} GMACs, {summary['wall_time_s']:.1f} s; run dir {config.output_dir}")
    if summary["state"] == "interrupted":
        return 128 + int(signal.Signals[summary["signal"]])
    return 0
