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
