"""Faults that reach one rank of a DDP run (2 gloo ranks on CPU) stop every rank the same way.

- SIGTERM delivered to rank 1 only (a node's preemption notice): both ranks stop at the same step,
  latest.pt holds that step, and `resume auto` on 2 ranks continues to the uninterrupted run's losses.
- A nan loss on rank 1 only: both ranks raise the same one-line error instead of rank 0 training on and
  hanging in the next collective.
Each train() call inits and destroys its own process group, hence one port per call.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from clipscale.io import read_jsonl
from tests.fixtures_train import tiny_config
from tests.test_train_distributed import GLOBAL_BATCH, _free_port

STEPS = 8
SIGNAL_AFTER = 3  # rank 1 receives SIGTERM during optimizer step 3
NAN_AT = 5  # rank 1's loss is nan at step 5


def _config(shards: Path, out: Path, **kw):
    return tiny_config(shards, out, samples_seen=STEPS * GLOBAL_BATCH, batch_size=GLOBAL_BATCH, log_every=4,
                       checkpoint_points=[1.0], threads=1, **kw)


def _on_rank1_at(step: int, fault):
    """Wrap loop.train_step so that on rank 1, at optimizer step `step`, `fault(result)` runs."""
    import clipscale.train.loop as loop

    real, calls = loop.train_step, {"n": 0}

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if os.environ["RANK"] == "1" and calls["n"] == step:
            out = fault(out)
        return out

    loop.train_step = wrapped
    return real


def _sigterm(out):
    os.kill(os.getpid(), signal.SIGTERM)
    return out


def _nan_loss(out):
    return type(out)(torch.full_like(out.loss, float("nan")), out.grad_norm, out.logit_scale)


def _worker(rank: int, world: int, ports: list[int], shards: str, out_dir: str) -> None:
    import clipscale.train.loop as loop
    from clipscale.errors import ClipscaleError
    from clipscale.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    out, shards_path, results = Path(out_dir), Path(shards), {}

    def call(port: int, name: str, run: str, **kw) -> None:
        os.environ["MASTER_PORT"] = str(port)
        try:
            summary = train(_config(shards_path, out / run, **kw))
            results[name] = {"state": summary["state"], "steps": summary["steps"]}
        except ClipscaleError as exc:
            results[name] = {"error": str(exc)}

    call(ports[0], "full", "full")
    real = _on_rank1_at(SIGNAL_AFTER, _sigterm)
    call(ports[1], "interrupted", "preempted")
    loop.train_step = real
    if rank == 0:  # what the interrupted run left, before the resume rewrites it
        from clipscale.models import read_checkpoint

        latest = read_checkpoint(out / "preempted" / "checkpoints" / "latest.pt")["clipscale"]
        summary = json.loads((out / "preempted" / "summary.json").read_text())
        results["left"] = {"latest_step": latest["step"], "summary": summary}
    call(ports[2], "resumed", "preempted", resume="auto")
    real = _on_rank1_at(NAN_AT, _nan_loss)
    call(ports[3], "nan", "nan")
    loop.train_step = real
    (out / f"rank{rank}.json").write_text(json.dumps(results))


@pytest.mark.slow
def test_a_fault_on_one_rank_stops_every_rank_alike(synth_train_shards: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ports = [_free_port() for _ in range(4)]
    ctx = mp.spawn(_worker, args=(2, ports, str(synth_train_shards), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240  # a rank that missed the fault hangs its peer: fail, do not hang
    while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):  # raises what a rank raised
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("a rank hung: the fault did not reach every rank")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    stopped = {r["interrupted"]["steps"] for r in ranks}
    assert [r["interrupted"]["state"] for r in ranks] == ["interrupted", "interrupted"]
    assert len(stopped) == 1 and SIGNAL_AFTER <= stopped.pop() < STEPS  # the same step on both ranks
    left = ranks[0]["left"]
    assert left["latest_step"] == ranks[0]["interrupted"]["steps"]
    assert (left["summary"]["state"], left["summary"]["signal"]) == ("interrupted", "SIGTERM")

    assert [r["resumed"] for r in ranks] == [{"state": "finished", "steps": STEPS}] * 2
    full = {r["step"]: r["loss"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")}
    resumed = {r["step"]: r["loss"] for r in read_jsonl(tmp_path / "preempted" / "metrics.jsonl")}
    assert sorted(resumed) == sorted(full) and resumed == full  # the uninterrupted run's losses

    errors = [r["nan"].get("error", "") for r in ranks]
    assert errors[0] == errors[1] and "\n" not in errors[0]
    assert errors[0].startswith(f"loss became nan/inf at or before step {2 * 4}")  # the next log step
    assert not (tmp_path / "nan" / "summary.json").exists()
