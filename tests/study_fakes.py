"""Instrumented stand-ins for the train/eval/data stages, for testing the study runner's bookkeeping.

They follow the run-directory contract (ARCHITECTURE.md) and log every call, so tests can assert that
nothing is trained or evaluated twice across kills and reruns. They never stand in for real results:
tests of real training live with the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from clipscale.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from clipscale.study.runner import Hooks
from clipscale.study.state import read_state


def _log(run_dir: Path, event: str) -> None:
    append_jsonl(run_dir / "fake_calls.jsonl", {"event": event, "pid": os.getpid()})


class _StopSignals:
    """Like the real trainer's: SIGTERM/SIGINT set a flag checked after each step (main thread only)."""

    def __enter__(self) -> _StopSignals:
        self.received: int | None = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(kwargs: dict[str, Any]) -> dict[str, Any]:
    with _StopSignals() as stop:
        return _train(kwargs, stop)


def _train(kwargs: dict[str, Any], stop: _StopSignals) -> dict[str, Any]:
    run_dir = Path(kwargs["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    _log(run_dir, "train")
    if kwargs["model"] == os.environ.get("FAKE_FAIL_MODEL"):
        raise RuntimeError("loss is NaN at step 3")
    atomic_write_json(run_dir / "config.json", kwargs)
    ckpts = run_dir / "checkpoints"
    ckpts.mkdir(exist_ok=True)
    total, batch = kwargs["samples_seen"], kwargs.get("batch_size", 100)
    points = {round(p * total) for p in kwargs.get("checkpoint_points", [1.0])}
    done = max((r["samples_seen"] for r in read_jsonl(run_dir / "metrics.jsonl")), default=0)
    step_s = float(os.environ.get("FAKE_STEP_SECONDS", "0"))
    if os.environ.get("FAKE_SLOW_FIRST_ATTEMPT") and read_state(run_dir)["attempts"] == 1:
        step_s = 1.0  # the first attempt outlives its SLURM time limit; the requeued one does not
    while done < total:
        time.sleep(step_s)
        done = min(total, done + batch)
        append_jsonl(run_dir / "metrics.jsonl", {"samples_seen": done, "loss": 1.0 / done,
                                                 "samples_per_s": 1000.0})
        for p in sorted(points):
            if p <= done and not (ckpts / f"samples_{p:012d}.pt").exists():
                atomic_write_text(ckpts / f"samples_{p:012d}.pt", "fake")
                _log(run_dir, f"checkpoint {p}")
        if stop.received is not None and done < total:  # the real trainer: save latest.pt, summarize, return
            _log(run_dir, f"interrupted {done}")
            name = signal.Signals(stop.received).name
            summary = {"state": "interrupted", "samples_seen": done, "signal": name}
            atomic_write_json(run_dir / "summary.json", summary)
            return summary
    summary = {"state": "finished", "samples_seen": total}
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def evaluate(*, run_dir: Path, suite: str, data_root: str, device: str, batch_size: int) -> list[dict]:
    assert Path(data_root).is_dir(), data_root
    cell = json.loads((run_dir / "run.json").read_text())
    done = {r["samples_seen"] for r in read_jsonl(run_dir / "results.jsonl")}
    records = []
    for ckpt in sorted((run_dir / "checkpoints").glob("samples_*.pt")):
        samples = int(ckpt.stem.split("_")[1])
        if samples in done:
            continue
        compute = samples * cell["gmacs"]
        rec = {"model": cell["model"], "checkpoint": str(ckpt), "samples_seen": samples, "compute": compute,
               "dataset": "synth_retrieval", "task": "zeroshot_retrieval",
               "metrics": {"image_retrieval_recall@5": 1 - 0.9 * compute ** -0.2}}
        append_jsonl(run_dir / "results.jsonl", rec)
        _log(run_dir, f"eval {samples}")
        records.append(rec)
    return records


def write_train_data(out_dir: Path, *, samples: int, seed: int, image_size: int, distribution: str) -> None:
    out_dir.mkdir(parents=True)
    append_jsonl(out_dir.parent / "prep_calls.jsonl", {"event": "train_data", "pid": os.getpid()})
    time.sleep(float(os.environ.get("FAKE_PREP_SECONDS", "0")))
    for i in range(2):
        (out_dir / f"{i:05d}.tar").write_bytes(b"")
    atomic_write_json(out_dir / "meta.json", {"samples": samples, "distribution": distribution})


def write_eval_data(out_dir: Path, *, seed: int, image_size: int, samples_per_task: int) -> None:
    out_dir.mkdir(parents=True)
    atomic_write_json(out_dir / "meta.json", {"seed": seed})


FAKE_HOOKS = Hooks(train=train, evaluate=evaluate, train_data=write_train_data, eval_data=write_eval_data)


def fake_flops(model: str) -> tuple[float, float, float]:
    """(GMACs, M params, M params without embeddings) of the ladder, rounded."""
    return {"tiny-S0": (0.0007, 0.034, 0.030), "tiny-S1": (0.005, 0.22, 0.21),
            "tiny-S2": (0.013, 0.6, 0.58)}[model]


def main(study_path: str, jobs: int = 1) -> int:
    """Entry point of the killed-executor tests: `clipscale run` with the fakes, in a subprocess."""
    from unittest import mock

    from clipscale.study.cli import run_exit_status
    from clipscale.study.runner import run_study
    from clipscale.study.spec import load_study

    with mock.patch("clipscale.study.grid.default_flops", fake_flops):
        return run_exit_status(run_study(load_study(study_path), jobs=jobs, hooks=FAKE_HOOKS))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1))
