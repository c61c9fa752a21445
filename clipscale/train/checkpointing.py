"""Resumable state on top of models.save_checkpoint, checkpoint points, and the preemption handler.

latest.pt holds weights, optimizer and the train state (step, samples seen, RNG, skip counts); the
data position is the step itself (batches are a pure function of (seed, step)), so resuming
reproduces the uninterrupted run's loss sequence exactly. Point checkpoints
(samples_<n:012d>.pt) hold weights and metadata only: they are what evals read.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
from pathlib import Path
from typing import Any

import torch

from clipscale.errors import ClipscaleError
from clipscale.models import read_checkpoint, save_checkpoint
from clipscale.train.config import recipe_changes, resume_allowed_keys


def point_steps(points: list[float], total_steps: int) -> list[int]:
    """Steps at which checkpoint points fall (each fraction of the total, at least step 1); the
    final step is always one, so every run ends with a checkpoint of its final weights."""
    steps = {min(total_steps, max(1, math.ceil(p * total_steps - 1e-9))) for p in points}
    return sorted(steps | {total_steps})


def point_path(run_dir: Path, samples_seen: int) -> Path:
    return run_dir / "checkpoints" / f"samples_{samples_seen:012d}.pt"


def latest_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "latest.pt"


def finished_summary(run_dir: Path, config: dict[str, Any], total_steps: int) -> dict[str, Any] | None:
    """summary.json of a run that already finished this recipe (`config`: the resolved TrainConfig dict)
    and dropped its latest.pt (keep_latest false), so that `resume = "auto"` trains nothing more, as
    it does when latest.pt is kept; None when there is something to train."""
    if latest_path(run_dir).exists():
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(summary, dict) and isinstance(saved, dict)):
        return None
    done = summary.get("state") == "finished" and summary.get("steps") == total_steps
    return summary if done and not recipe_changes(saved, config) else None


def _read_dict(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def check_output_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse, before anything is written, to train into a directory holding a run of another recipe
    (`config`: the resolved TrainConfig dict; its config.json records the earlier one): training would
    replace that run's checkpoints, metrics and summary in place. Whatever `resume` says: `none` starts
    the same recipe over, never another one. A resumable latest.pt under `resume = "auto"` is left to
    `load_resume`, which compares the recipe with the checkpoint's own."""
    if config.get("resume") == "auto" and latest_path(run_dir).is_file():
        return
    saved = _read_dict(run_dir / "config.json")
    changed = recipe_changes(saved, config) if saved is not None else []
    if not changed:
        return
    assert saved is not None
    diff = ", ".join(f"{k} {saved[k]!r} there, {config[k]!r} now" for k in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    raise ClipscaleError(f"{run_dir} holds {_describe_run(run_dir, saved)} of another config ({diff}{more}): "
                         f"train into another --output-dir, or delete {run_dir} to replace that run")


def _describe_run(run_dir: Path, saved: dict[str, Any]) -> str:
    """'a finished run of tiny-S1 (512 samples seen)', from the directory's summary.json and config.json."""
    model, target = saved.get("model", "?"), saved.get("samples_seen")
    summary = _read_dict(run_dir / "summary.json") or {}
    seen, state = summary.get("samples_seen"), summary.get("state")
    of = f" of {target:,}" if isinstance(target, int) else ""
    if state == "finished" and isinstance(seen, int):
        return f"a finished run of {model} ({seen:,} samples seen)"
    if isinstance(state, str) and isinstance(seen, int):
        return f"an {state} run of {model} ({seen:,}{of} samples seen)" if state[:1] in "aeiou" else \
            f"a {state} run of {model} ({seen:,}{of} samples seen)"
    return f"an unfinished run of {model} ({target:,} samples planned)" if of else f"a run of {model}"


def find_resume(resume: str, run_dir: Path) -> Path | None:
    if resume == "none":
        return None
    if resume == "auto":
        path = latest_path(run_dir)
        return path if path.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise ClipscaleError(f"train config field 'resume': checkpoint {path} not found")
    return path


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_resume(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The raw payload (weights_only); refuses a checkpoint of a different run definition."""
    payload = read_checkpoint(path)
    train_state = payload["clipscale"].get("train_state")
    if train_state is None or "optimizer" not in payload:
        raise ClipscaleError(f"{path}: not a resumable checkpoint (no optimizer/train state); "
                             "use a latest.pt or resume = 'none'")
    saved = payload["clipscale"].get("train_config", {})
    changed = recipe_changes(saved if isinstance(saved, dict) else {}, config)
    if changed:  # raised before config.json is written: the run's record stays what it trained
        diff = ", ".join(f"{k} (checkpoint {saved[k]!r}, now {config[k]!r})" for k in changed)
        raise ClipscaleError(f"{path}: cannot resume: the recipe changed: {diff}; only "
                             f"{', '.join(resume_allowed_keys())} may change on resume (train a changed "
                             "recipe into a new output_dir)")
    return payload


def check_finite_weights(model: torch.nn.Module, *, step: int, run_dir: Path, env: Any) -> None:
    """Refuse to write a checkpoint of NaN/inf weights (the loss check misses a step that breaks
    the weights it is about to save). One fused norm over this rank's parameters (FSDP: its
    shards), agreed on by every rank so all stop at the same step; call on every rank."""
    from torch.distributed.tensor import DTensor

    from clipscale.train.distributed import any_rank, unwrap

    params = unwrap(model).parameters()
    local = [p.detach().to_local() if isinstance(p, DTensor) else p.detach() for p in params]
    finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(local)).item()) if local else True
    if any_rank(not finite, env):
        last = latest_path(run_dir)
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was written"
        raise ClipscaleError(f"weights became nan/inf at or before step {step}; not writing its "
                             f"checkpoint; {kept}")


class Checkpointer:
    """Writes point and latest checkpoints (rank 0 only; every write is temp file + rename)."""

    def __init__(self, run_dir: Path, *, model_name: str, model_cfg: dict[str, Any], tokenizer: Any,
                 gmacs: float, config: dict[str, Any], is_main: bool) -> None:
        self.run_dir, self.model_name, self.model_cfg = run_dir, model_name, model_cfg
        self.tokenizer, self.gmacs, self.config, self.is_main = tokenizer, gmacs, config, is_main

    def save(self, path: Path, *, model: torch.nn.Module, step: int, samples_seen: int,
             optimizer_state: dict[str, Any] | None = None,
             train_state: dict[str, Any] | None = None) -> Path:
        extra: dict[str, Any] = {"train_config": self.config}
        if train_state is not None:
            extra["train_state"] = train_state
        if not self.is_main:
            return path
        return save_checkpoint(path, model=model, model_name=self.model_name, model_config=self.model_cfg,
                               tokenizer=self.tokenizer, step=step, samples_seen=samples_seen,
                               compute=self.gmacs * samples_seen, gmacs=self.gmacs,
                               optimizer_state=optimizer_state, extra=extra)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class StopSignals:
    """SIGTERM/SIGINT/SIGUSR2 set a flag the loop checks every few steps: SLURM preemption and
    `scontrol requeue` (SIGTERM), Ctrl-C, and the time-limit warning submitit asks SLURM for (USR2,
    90 s before the limit; the job requeues itself once the trainer has returned).

    The loop then writes latest.pt and exits: a signal never interrupts a checkpoint write.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
