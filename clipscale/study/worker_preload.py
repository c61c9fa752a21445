"""Imported by the local executor's fork server only, so each run's process starts warm.

`ProcessExecutor` (executors.py) forks every task from a multiprocessing fork server that imported this
module, and with it `worker.PRELOAD_MODULES`: torch, open_clip and the training, evaluation and data
stages a run's task imports (about 8 s a run under spawn). Only imports happen here, never a torch op or
a CUDA call: the server must stay single-threaded (it forks) and CUDA uninitialised (each task sets
CUDA_VISIBLE_DEVICES before its first CUDA call). Importing this module anywhere else would change that
process's environment: nothing else imports it.
"""

from __future__ import annotations

import os

from clipscale.study.worker import PRELOAD_MODULES, import_modules

# numpy's OpenBLAS starts its thread pool at import unless told to use one thread: a pool would make the
# server multi-threaded when it forks. Each task gets the driver's environment back (worker.task_main).
os.environ["OPENBLAS_NUM_THREADS"] = "1"
FAILED = import_modules(PRELOAD_MODULES)
