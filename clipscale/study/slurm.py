"""SLURM executor via submitit: one job per run, torchrun inside, requeue on preemption or timeout.

submitit writes the sbatch script, pickles the task, and on preemption/timeout calls the job's
`checkpoint()`; `RunJob` is a `submitit.helpers.Checkpointable`, so the same task is requeued and the
run resumes from its latest checkpoint (the trainer writes one on SIGTERM and at every checkpoint
point). Nodes, GPUs, time, partition and friends come from the study's [slurm] table. Data
preparation happens in the submitting process (on the login node) before jobs are submitted.

`backend`: "slurm" (or "auto", submitit's choice) on a cluster; "local"/"debug" run the very same
job objects through submitit's LocalExecutor/DebugExecutor, which is how tests cover this path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import submitit

from clipscale.errors import ClipscaleError
from clipscale.study.spec import StudySpec

BACKENDS = ("auto", "slurm", "local", "debug")


def _slurm_parameters(study: StudySpec) -> dict[str, Any]:
    s = study.slurm
    params: dict[str, Any] = {"timeout_min": s.time_min, "nodes": s.nodes, "tasks_per_node": 1,
                              "cpus_per_task": s.cpus_per_task, "name": f"clipscale-{study.name}"}
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(s, key)
        if value:
            params[f"slurm_{key}"] = value
    return params


class RunJob(submitit.helpers.Checkpointable):
    """The callable a SLURM job executes; its inherited checkpoint() requeues it with the same task."""

    def __call__(self, fn: Callable[..., Any], task: Any) -> Any:
        nnodes = getattr(task, "nnodes", 1)
        if nnodes > 1:
            env = submitit.JobEnvironment()
            task = replace(task, master=env.hostnames[0], node_rank=env.node)
            if env.node != 0:  # other nodes only contribute ranks; node 0 owns lock, state and evals
                from clipscale.study.hooks import train_torchrun
                from clipscale.study.runner import train_kwargs

                train_torchrun(train_kwargs(task), nproc=task.nproc, nnodes=nnodes, node_rank=env.node,
                               master=env.hostnames[0])
                return {"run_id": task.plan.run_id, "status": "worker-node", "error": None, "seconds": 0.0}
        return fn(task)


class SlurmExecutor:
    """submit(fn, task) -> submitit Job (has done() and result(), like a Future)."""

    prepares_locally = True
    poll_seconds = 5.0

    def __init__(self, study: StudySpec, *, backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ClipscaleError(f"unknown SLURM backend {backend!r}; valid: {', '.join(BACKENDS)}")
        cluster = {"auto": None, "slurm": "slurm", "local": "local", "debug": "debug"}[backend]
        self._executor = submitit.AutoExecutor(folder=study.output_dir / "slurm" / "%j", cluster=cluster,
                                                slurm_max_num_timeout=study.slurm.max_requeue)
        self._executor.update_parameters(**_slurm_parameters(study))
        self.nproc = max(1, study.slurm.gpus_per_node)
        self.nnodes = study.slurm.nodes
        if backend in ("local", "debug"):
            self.poll_seconds = 0.5

    def submit(self, fn: Callable[..., Any], task: Any) -> Any:
        if self.nnodes > 1:
            task = replace(task, nnodes=self.nnodes)
        return self._executor.submit(RunJob(), fn, task)

    def shutdown(self) -> None:
        pass  # jobs belong to SLURM now; rerunning `clipscale run` picks up whatever they finished
