"""How many CPU threads a rank may use: its share of the CPUs allocated to it, never the machine's.

One rule everywhere: the CPUs this process was given (`CLIPSCALE_CPUS`, set by `clipscale run --jobs N`
to a worker's pinned cores and by a SLURM job to its `cpus_per_task`; else SLURM's
`SLURM_CPUS_PER_TASK`; else the cores this process may run on), divided among the local ranks, minus
one per data-loader worker (each worker decodes on a core of its own). torch's default, the machine's
core count, oversubscribes a shared node: two 1-CPU SLURM jobs trained 25x slower with it.
Standard library only: executors use it before torch is imported.
"""

from __future__ import annotations

import os


def allocated_cpus() -> int:
    for var in ("CLIPSCALE_CPUS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_rank(*, workers: int, cpus: int | None = None, ranks: int | None = None) -> int:
    """This rank's torch threads: allocated CPUs // local ranks - loader workers, at least 1."""
    cpus = allocated_cpus() if cpus is None else cpus
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if ranks is None else ranks
    return max(1, cpus // max(1, ranks) - max(0, workers))
