"""The stage calls a study run makes (train, evaluate, generate data), behind plain functions.

They import their stage lazily, so worker processes and `clipscale --help` stay light, and tests can
swap them for instrumented ones through `Hooks` (below).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from clipscale.errors import ClipscaleError


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def train(kwargs: dict[str, Any]) -> dict[str, Any]:
    from clipscale.train import TrainConfig
    from clipscale.train import train as train_run

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return train_run(TrainConfig(**kwargs), progress_lines=True)  # lines: runs may share a terminal
    finally:  # the trainer's checkpoint-on-signal handlers must not outlive training
        if threading.current_thread() is threading.main_thread():
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def evaluate(*, run_dir: Path, suite: str, data_root: str, device: str, batch_size: int) -> Any:
    from clipscale.evals import evaluate_run, load_suite

    device = default_device() if device == "auto" else device

    return evaluate_run(run_dir, suite=load_suite(suite, root=data_root), device=device,
                        batch_size=batch_size)


def write_train_data(out_dir: Path, *, samples: int, seed: int, image_size: int, distribution: str) -> None:
    from clipscale.data.synth import write_train_shards

    write_train_shards(out_dir, samples=samples, seed=seed, image_size=image_size, distribution=distribution)


def write_eval_data(out_dir: Path, *, seed: int, image_size: int, samples_per_task: int) -> None:
    from clipscale.data.synth import write_eval_sets

    write_eval_sets(out_dir, seed=seed, image_size=image_size, samples_per_task=samples_per_task)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(flat: dict[str, Any]) -> str:
    """A flat TrainConfig dict as TOML (None = key omitted, the field's default); round-trips tomllib."""
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in flat.items() if v is not None)
    assert tomllib.loads(text) is not None
    return text


def torchrun_command(config_path: Path, *, nproc: int, nnodes: int = 1, node_rank: int = 0,
                     master: str | None = None, port: int = 29500) -> list[str]:
    """`torchrun ... -m clipscale.cli train CONFIG.toml`: one process per local GPU (or CPU rank)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes > 1:
        if not master:
            raise ClipscaleError("multi-node torchrun needs the master host (SLURM's first node)")
        cmd += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={master}",
                f"--master_port={port}"]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "clipscale.cli", "train", str(config_path)]


def train_torchrun(kwargs: dict[str, Any], *, nproc: int, nnodes: int = 1, node_rank: int = 0,
                   master: str | None = None) -> None:
    """Train one run as `nproc` ranks per node under torchrun; raise with the tail of its output.

    torchrun's output (rank 0's progress lines among it) goes to RUN_DIR/torchrun.log and to this
    process's stderr, so a SLURM or CI log shows the run going. A signal here is relayed to torchrun as
    SIGTERM (its ranks checkpoint) and waited for, never answered by killing it, which would orphan the
    ranks. Ranks stopped by a signal leave an "interrupted" summary: that is returned as such, not raised
    as a failure.
    """
    run_dir = Path(kwargs["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "train_config.toml"
    # progress as the run's config says (default on); the ranks' stderr is the pipe below, not a terminal,
    # so rank 0 (the only rank with progress) prints lines, never a bar (train/metrics.py Progress)
    config_path.write_text(to_toml(kwargs), encoding="utf-8")
    cmd = torchrun_command(config_path, nproc=nproc, nnodes=nnodes, node_rank=node_rank, master=master)
    log_path = run_dir / "torchrun.log"
    launched = time.time()
    with open(log_path, "ab") as log:
        # torchrun itself ignores SLURM's time-limit USR2 (by default it would die of it, orphaning its
        # ranks); the ranks, which SLURM signals too, set their own handler and checkpoint
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ),
                                preexec_fn=_ignore_usr2)
        # a thread tees the pipe, so the main thread waits on torchrun and takes signals as before
        relay = threading.Thread(target=_tee, args=(proc.stdout, log), name="torchrun-tee", daemon=True)
        relay.start()
        try:
            returncode = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            relay.join(TEE_DRAIN_S)
            raise
        relay.join(TEE_DRAIN_S)  # the log is complete before its last line is quoted
    if returncode != 0 and not _interrupted_since(run_dir / "summary.json", launched):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ClipscaleError(f"torchrun exited {returncode}: {tail[0][:300]} (see {log_path})")


TEE_DRAIN_S = 30.0  # after torchrun exits, how long its output may take to end (ranks it left behind)


def _tee(pipe: IO[bytes], log: IO[bytes]) -> None:
    """Each line of torchrun's output to torchrun.log (flushed: `tail -f` follows it) and to stderr."""
    with pipe:
        for line in iter(pipe.readline, b""):
            try:
                log.write(line)
                log.flush()
            except ValueError:  # the log was closed: torchrun exited TEE_DRAIN_S ago
                return
            try:
                sys.stderr.write(line.decode("utf-8", errors="replace"))
                sys.stderr.flush()
            except (OSError, ValueError):  # no stderr (closed): the log still gets everything
                pass


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _interrupted_since(summary_path: Path, since: float) -> bool:
    import json

    try:
        fresh = summary_path.stat().st_mtime >= since - 1
        return fresh and json.loads(summary_path.read_text(encoding="utf-8")).get("state") == "interrupted"
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class Hooks:
    """The stage functions a run calls; module-level callables, so tasks pickle to worker processes."""

    train: Callable[..., Any] = train
    evaluate: Callable[..., Any] = evaluate
    train_data: Callable[..., Any] = write_train_data
    eval_data: Callable[..., Any] = write_eval_data
