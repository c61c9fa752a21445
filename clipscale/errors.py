"""The one exception type for user-facing errors.

Raise `ClipscaleError` for bad input (a file, a field, a value): the CLI prints its message on one
line and exits with status 2. Anything else is a bug and keeps its traceback.
"""


class ClipscaleError(Exception):
    """Bad input or an unrecoverable condition the user can fix; message is one line."""

    exit_code = 2


class CheckpointError(ClipscaleError):
    """One checkpoint file cannot be used (unreadable, refused as unsafe, or non-finite weights): a run
    directory's other checkpoints are still evaluated."""


def error_line(exc: BaseException, limit: int = 500) -> str:
    """One line for a recorded failure (a run's state, a fit the report lists): a ClipscaleError's own
    message, which names the file and field; any other exception with its type, since that is a bug's
    first clue."""
    text = str(exc) if isinstance(exc, ClipscaleError) else f"{type(exc).__name__}: {exc}"
    return (text.splitlines() or [type(exc).__name__])[0][:limit]
