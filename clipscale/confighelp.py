"""One source for what a config key means: `--help`, validation errors and docs/config.md.

Config dataclasses document each field with `field(default=..., metadata={"help": ..., "choices": ...})`
(see `doc_field`). This module turns that into a one-line help text, checks a value against its
choices with an error naming the field, and renders docs/config.md (`python -m clipscale.confighelp
docs/config.md`; tests/test_cli_help.py fails when the file is stale). Standard library only: the
CLI imports it to build `--help`.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MISSING = dataclasses.MISSING


def doc_field(default: Any = _MISSING, *, help: str, choices: Sequence[str] = (),
              factory: Any = _MISSING) -> Any:
    """A dataclass field with its meaning (one line) and, for enumerations, its allowed values."""
    meta = {"help": help, "choices": tuple(choices)}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_help(f: dataclasses.Field) -> str:
    return str(f.metadata.get("help", ""))


def field_choices(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple(f.metadata.get("choices", ()))


def default_text(f: dataclasses.Field) -> str:
    """The default as a user writes it (TOML-ish): none, true, a list, a number or a string."""
    if f.default is not _MISSING:
        value = f.default
    elif f.default_factory is not _MISSING:
        value = f.default_factory()
    else:
        return "required"
    return value_text(value)


def value_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"' if value else '""'
    return f"{value:g}" if isinstance(value, float) else str(value)


def type_text(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def help_line(f: dataclasses.Field) -> str:
    """"meaning (default: X; one of: a, b)": the `--help` text of a config key."""
    extra = f"default: {default_text(f)}"
    if field_choices(f):
        extra += f"; one of: {', '.join(field_choices(f))}"
    return f"{field_help(f)} ({extra})"


def check_choice(where: str, f: dataclasses.Field, value: Any) -> str | None:
    """The one-line error for a value outside the field's choices, else None: the allowed values and the
    value given first, then the field's meaning (which would read as the last choice's if put between)."""
    choices = field_choices(f)
    if choices and value not in choices:
        return f"{where}: expected one of {', '.join(choices)}, got {value!r} ({field_help(f)})"
    return None


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _sections() -> list[tuple[str, str, type]]:
    from clipscale.study.spec import EvalSpec, ExecutorSpec, FitSpec, SlurmSpec
    from clipscale.train.config import TrainConfig

    return [
        ("TrainConfig: `clipscale train` flags, train config files, a study's `[train]`",
         "Every key is a `clipscale train --key value` flag (dashes or underscores) and a key of a train "
         "config TOML file. A study's `[train]` and `[[rules]] set` take the same keys except the ones the "
         "grid and the runner own (model, train_data, output_dir, data_size, samples_seen, seed, resume, "
         "eval_suite, eval_data_root, model_configs), plus `warmup_fraction` (warmup as a fraction of "
         "samples seen).", TrainConfig),
        ("Study `[eval]`", "How every run of a study is evaluated (see docs/suites.md).", EvalSpec),
        ("Study `[fit]`", "The laws `clipscale run` and `clipscale report` fit (see docs/scaling-laws.md).",
         FitSpec),
        ("Study `[executor]`", "Local execution (`clipscale run --executor local`).", ExecutorSpec),
        ("Study `[slurm]`", "SLURM resources (`clipscale run --executor slurm`), one job per run.",
         SlurmSpec),
    ]


def config_markdown() -> str:
    """docs/config.md: every key of every config section with its type, default, values and meaning."""
    out = ["# Configuration keys", "",
           "Generated from the config dataclasses' field docs by `python -m clipscale.confighelp "
           "docs/config.md`; the same text is `clipscale train --help` and the validation errors. Do not "
           "edit by hand.", ""]
    for title, intro, cls in _sections():
        hints = typing.get_type_hints(cls)
        out += [f"## {title}", "", intro, "", "| key | type | default | values | meaning |",
                "|---|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            choices = ", ".join(f"`{c}`" for c in field_choices(f))
            meaning = field_help(f).replace("|", "\\|")
            out.append(f"| `{f.name}` | {type_text(hints[f.name]).replace('|', 'or')} | "
                       f"`{default_text(f)}` | {choices} | {meaning} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = config_markdown()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
