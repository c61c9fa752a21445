"""`--json` for every verb: one JSON document on stdout, everything else on stderr.

Standard library only (the CLI modules import it at start-up). Under `--json` the library's progress lines,
printed with print(), are redirected to stderr so stdout holds exactly one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

# the one wording of every verb's --json (tests/test_cli_help.py); what the JSON holds is in each verb's
# description where it is not one document (eval: one JSON line per record)
JSON_HELP = ("print JSON instead of text: stdout holds only the JSON, progress lines go to stderr "
             "(default: text)")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


@contextlib.contextmanager
def progress_to_stderr(enabled: bool) -> Iterator[None]:
    """With `enabled`, what the wrapped code prints goes to stderr (stdout is kept for the JSON)."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def plain(value: Any) -> Any:
    """Paths as strings, recursively, so the document is JSON (clipscale.io.dumps handles the floats)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def emit(doc: dict[str, Any]) -> None:
    """Print `doc` as the verb's one JSON document."""
    from clipscale.io import dumps

    print(dumps(plain(doc), indent=2), flush=True)
