"""Start-up cost of `clipscale run`'s local workers: N tiny tasks over `--jobs` slots, each importing what
a run's task imports (torch, open_clip, the training and evaluation stages) and doing one small torch op,
timed with CLIPSCALE_START_METHOD=spawn (a fresh interpreter a task) and =forkserver (forked from a
server that imported them once). Each method runs in a fresh driver process, so the fork server's own
start is counted, as in one `clipscale run`. Run it on an idle machine; it prints one JSON line a method.

    .venv/bin/python bench/bench_worker_start.py [--tasks 26] [--jobs 2] [--methods spawn forkserver]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def tiny_task(i: int) -> float:
    """What a run's process pays before training: its stack's imports; then a token of work."""
    import open_clip  # noqa: F401
    import torch

    import clipscale.evals.runner
    import clipscale.train.loop  # noqa: F401

    return float(torch.ones(8).sum()) + i


def drive(tasks: int, jobs: int) -> dict:
    from clipscale.study.executors import ProcessExecutor

    start = time.perf_counter()
    executor = ProcessExecutor(jobs)
    futures = [executor.submit(tiny_task, i) for i in range(tasks)]
    first = None
    for future in futures:
        future.result()
        first = first if first is not None else time.perf_counter() - start
    executor.shutdown()
    return {"method": executor.start_method, "tasks": tasks, "jobs": jobs,
            "wall_s": round(time.perf_counter() - start, 2), "first_result_s": round(first or 0.0, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=26)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["spawn", "forkserver"])
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)  # one method, this process
    args = parser.parse_args()
    if args.driver:
        print(json.dumps(drive(args.tasks, args.jobs)), flush=True)
        return
    for method in args.methods:
        env = {**os.environ, "CLIPSCALE_START_METHOD": method}
        subprocess.run([sys.executable, __file__, "--driver", "--tasks", str(args.tasks), "--jobs",
                        str(args.jobs)], env=env, check=True)


if __name__ == "__main__":
    main()
