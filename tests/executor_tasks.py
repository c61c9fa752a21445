"""Tasks for tests/test_executors.py, in a module of their own that imports only the standard library:
a worker imports it to unpickle a task, and what a task sees of sys.modules must be the server's doing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HEAVY = ("torch", "open_clip", "clipscale.train.loop", "clipscale.evals.runner")


def worker_view(var: str) -> dict:
    """What a task sees as it starts: which heavy modules are loaded, its environment, cwd and threads."""
    loaded = {name: name in sys.modules for name in HEAVY}
    torch = sys.modules.get("torch")
    return {"loaded": loaded, "var": os.environ.get(var), "cwd": os.getcwd(), "pid": os.getpid(),
            "ppid": os.getppid(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "cuda_initialized": bool(torch is not None and torch.cuda.is_initialized())}


def sleep_and_record(path: str, seconds: float) -> str:
    """Write this process's pid to `path`, then sleep: the worker a test kills things around."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return "slept"


def main(argv: list[str]) -> None:
    """A driver for kill tests: `python -m tests.executor_tasks PIDFILE`: one busy task, waited for."""
    from clipscale.study.executors import ProcessExecutor

    executor = ProcessExecutor(2, pin=False)
    print(executor.submit(sleep_and_record, argv[0], 120.0).result(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])


def process_alive(pid: int) -> bool:
    """A live process (a zombie waiting for a reaper does not count); Linux /proc. For the executor and
    interrupt tests, which watch workers and drivers die."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
