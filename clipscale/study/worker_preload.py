"""What the local executor's fork server imports once, so each run's process starts warm.

`ProcessExecutor` (executors.py) forks every task from a multiprocessing fork server that imported this
module: torch, open_clip and the training, evaluation and data stages a run's task imports (about 8 s a
run under spawn). Only imports happen here, never a torch op or a CUDA call: the server must stay
single-threaded (it forks) and CUDA uninitialised (each task sets CUDA_VISIBLE_DEVICES before its first
CUDA call). A module that fails to import is skipped, whatever it raises (multiprocessing's own preload
skips only ImportError, and anything else would kill the server and with it every run's start): the task
that needs it imports it again and fails with the real error, as it would under spawn.
"""

from __future__ import annotations

import importlib
import os

MODULES = (
    "numpy",
    "torch",
    "open_clip",
    "clipscale.study.runner",  # a task's function (execute_run, prepare_dataset) and its hooks
    "clipscale.study.hooks",
    "clipscale.train",
    "clipscale.train.loop",
    "clipscale.train.session",
    "clipscale.evals",
    "clipscale.evals.runner",
    "clipscale.models",
    "clipscale.data.loader",
    "clipscale.data.synth",
)


def import_modules(names: tuple[str, ...] | list[str]) -> list[str]:
    """Import each module that imports cleanly; return the names of those that did not."""
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # whatever it raises: see the module docstring
            failed.append(name)
    return failed


# numpy's OpenBLAS starts its thread pool at import unless told to use one thread: a pool would make the
# server multi-threaded when it forks. Each task gets the driver's environment back (executors._task_main).
os.environ["OPENBLAS_NUM_THREADS"] = "1"
FAILED = import_modules(MODULES)
