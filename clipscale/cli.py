"""The `clipscale` command: a thin dispatcher over the stages' command modules.

Each stage owns a small `cli` module that imports only the standard library at top level and
exposes `register(subparsers)`, which adds its verbs and sets `handler` on each. Handlers turn the
parsed arguments into keyword arguments for the library and import torch/open_clip lazily, so
`clipscale --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from clipscale import __version__
from clipscale.errors import ClipscaleError

# Order is the order verbs appear in `clipscale --help`.
STAGE_COMMAND_MODULES: tuple[str, ...] = (
    "clipscale.study.cli",  # run, status, results, report, demo
    "clipscale.study.import_cli",  # import
    "clipscale.train.cli",  # train
    "clipscale.evals.cli",  # eval
    "clipscale.fit.cli",  # fit, predict, reproduce
    "clipscale.fit.analyses.cli",  # compare, isoflop
    "clipscale.models.cli",  # models, flops
    "clipscale.data.cli",  # data synth
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipscale",
        description="Reproducible scaling-law studies of CLIP: train a grid, evaluate, fit, report.",
    )
    parser.add_argument("--version", action="version", version=f"clipscale {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for module_name in STAGE_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # stage not built yet
            raise
        module.register(subparsers)
    for sub in walk_parsers(parser):
        sub.formatter_class = HelpFormatter
    return parser


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default and allowed values, "(default: X; one of: A, B)", unless
    it states them already; a switch's default is "off"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or text == argparse.SUPPRESS:
            return text
        extra = []
        if "default" not in text:
            shown = default_text(action)
            if shown is not None:
                extra.append("default: " + shown.replace("%", "%%"))
        if action.choices and "one of" not in text:
            extra.append("one of: " + ", ".join(map(str, action.choices)).replace("%", "%%"))
        return f"{text} ({'; '.join(extra)})" if extra else text


def default_text(action: argparse.Action) -> str | None:
    """An option's default as its help shows it; None where it has none to show. Identity checks: 0 and
    0.0 are defaults to show (0 == False in Python, so `0 in (None, False)` is True)."""
    d = action.default
    if d is None or d is argparse.SUPPRESS or (isinstance(d, list) and not d):
        return None
    if isinstance(action, argparse._StoreTrueAction):
        return "off" if d is False else "on"
    if d is False or d is True:
        return "on" if d else "off"
    return str(d)


def walk_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every sub-command parser under it (for help formatting and tests)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += walk_parsers(sub)
    return found


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser of the verb `args` were parsed for (`clipscale data synth`: data's synth)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return chosen_parser(action.choices[name], args)
    return parser


def reject_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Unrecognised arguments are the verb's error, with its usage (argparse reports them with the
    top-level usage, as the subparser hands them up), and the verb's closest option names."""
    import difflib

    verb = chosen_parser(parser, args)
    known = [s for a in verb._actions for s in a.option_strings if a.help != argparse.SUPPRESS]
    hints = []
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.6)
            hints += [f"did you mean {close[0]}?"] if close else []
    verb.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)})" if hints else ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        reject_unknown(parser, args, extra)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.verb is None else 2
    configure_logging()
    try:
        return int(handler(args) or 0)
    except ClipscaleError as exc:
        print(f"clipscale: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("clipscale: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `clipscale models | head`: the reader left; exit quietly like other Unix tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # the environment, not a bug: a read-only or full directory, a missing path
        print(f"clipscale: error: {os_error_line(exc)}", file=sys.stderr)
        return 2


class _LineFormatter(logging.Formatter):
    """`warning: MESSAGE`, as the verbs' own warnings read."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging() -> None:
    """Warnings on stderr as one `warning: ...` line each, unless the caller configured logging already.

    Without this, the first `logging.info` of a library (open_clip's create_model) installs the default
    `WARNING:clipscale.study.grid:...` format on the root logger, mid-run."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def os_error_line(exc: OSError) -> str:
    """One line naming the path: "no space left on DIR" for a full disk, else "PATH: reason"."""
    import errno
    from pathlib import Path

    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = f" on {Path(exc.filename).parent}" if exc.filename else ""
        return f"no space left{where}"
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason.splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
