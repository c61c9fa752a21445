"""The training loop: `train_step` plus a short loop that logs, checkpoints, evaluates and stops.

Everything else (set-up, wrapping, data, checkpoint files) lives in its own module so this file
reads top to bottom as the algorithm.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipscale.data.loader import make_loader
from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_json
from clipscale.train import checkpointing as ckpt
from clipscale.train.config import TrainConfig
from clipscale.train.distributed import (
    all_reduce_sum,
    any_rank,
    checkpoint_model,
    grad_norm,
    max_over_ranks,
    optimizer_state,
    shutdown,
    unwrap,
    wait_for_main,
)
from clipscale.train.evalhook import run_eval_hook
from clipscale.train.loss import total_loss
from clipscale.train.metrics import Meter, MetricsWriter, Progress, mfu, peak_tflops
from clipscale.train.optim import step_lr
from clipscale.train.session import Session, build_session

MAX_LOGIT_SCALE = math.log(100.0)
# Steps between checks of the stop flag (SIGTERM/SIGINT) besides log and checkpoint steps. Under
# torchrun each check is an all-reduce and a host sync, so it is not done every step; every rank
# checks at the same steps and so stops at the same step.
STOP_CHECK_EVERY = 10


@dataclass
class StepResult:
    loss: torch.Tensor  # detached scalar, on device (no host sync here)
    grad_norm: torch.Tensor | None  # only computed when asked for (logging) or clipping
    logit_scale: torch.Tensor  # exp(logit_scale) after the clamp


def train_step(model: torch.nn.Module, loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, images: torch.Tensor, texts: torch.Tensor, *, lr: float,
               precision: str, grad_clip: float | None, want_grad_norm: bool = True) -> StepResult:
    """One optimizer step on normalised images and token ids of this rank's slice of the batch."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    dtype = {"bf16": torch.bfloat16, "amp": torch.float16}.get(precision)
    autocast = torch.autocast(images.device.type, dtype=dtype) if dtype else nullcontext()
    with autocast:
        loss = total_loss(loss_fn, model(images, texts))
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = None
    if grad_clip is not None or want_grad_norm:
        norm = grad_norm(unwrap(model).parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        logit_scale = unwrap(model).logit_scale
        logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return StepResult(loss.detach(), norm, logit_scale.detach().exp())


def train(config: TrainConfig, *, progress_lines: bool | None = None) -> dict[str, Any]:
    """Train one run into config.output_dir; returns (and writes) summary.json's content.

    progress_lines: progress as lines rather than a bar (None: lines when stderr is not a terminal;
    a study's runs always use lines, as several may share one terminal).
    """
    done = _already_finished(config)  # also refuses an output_dir holding a run of another recipe
    if done is not None:
        return done
    session = build_session(config)
    try:
        with ckpt.StopSignals() as stop:
            state = _loop(session, stop, progress_lines)
        return _finish(session, state)
    finally:
        shutdown(session.env)


def _already_finished(config: TrainConfig) -> dict[str, Any] | None:
    """The summary of this run when it finished earlier and dropped latest.pt (keep_latest false).
    Refuses (ClipscaleError) an output_dir that holds a run of another recipe, before anything is written."""
    from dataclasses import replace

    from clipscale.train.session import resolve_lr

    resolved = replace(config, lr=resolve_lr(config)).to_dict()
    run_dir = Path(config.output_dir)
    ckpt.check_output_dir(run_dir, resolved)
    if config.resume != "auto":
        return None
    return ckpt.finished_summary(run_dir, resolved, config.total_steps)


def _loop(s: Session, stop: ckpt.StopSignals, progress_lines: bool | None) -> str:
    cfg, env = s.config, s.env
    total = cfg.total_steps
    points = set(ckpt.point_steps(cfg.checkpoint_points, total))
    metrics = MetricsWriter(s.run_dir, report_to=cfg.report_to if env.is_main else (), config=cfg.to_dict())
    if env.is_main:
        metrics.truncate_after(s.start_step)
    loader = make_loader(s.dataset, s.start_step, total, workers=cfg.workers,
                         pin_memory=env.device.type == "cuda")
    bar = Progress(total * cfg.batch_size, s.start_step * cfg.batch_size,
                   enabled=cfg.progress and env.is_main, label=s.run_dir.name, lines=progress_lines)
    peak = peak_tflops(env.device, cfg.peak_tflops)
    meter, bad = Meter(), torch.zeros((), dtype=torch.bool, device=env.device)
    batches = iter(loader)
    for step in range(s.start_step, total):
        t = time.perf_counter()
        batch = next(batches)
        images = batch.images.to(env.device, non_blocking=True).float().sub_(s.mean).div_(s.std)
        texts = batch.texts.to(env.device, non_blocking=True)
        meter.wait += time.perf_counter() - t
        done = step + 1
        lr = step_lr(step, batch_size=cfg.batch_size, base_lr=cfg.lr, warmup=cfg.warmup,
                     total=total * cfg.batch_size, schedule=cfg.schedule, cooldown=cfg.cooldown)
        log_due = done % cfg.log_every == 0 or done == total or done in points
        out = train_step(s.model, s.loss_fn, s.optimizer, s.scaler, images, texts, lr=lr,
                         precision=cfg.precision, grad_clip=cfg.grad_clip, want_grad_norm=log_due)
        bad |= ~torch.isfinite(out.loss)
        s.decode_skipped += batch.skipped
        meter.samples += cfg.batch_size
        bar.update(cfg.batch_size)
        received = _stop_signal(stop, env, done, due=log_due or done in points)
        stopping = received is not None
        if log_due or stopping:
            _check_finite(bad, done, env, s)
            record = _record(s, out, done, lr, meter, peak)
            bar.logged(record)
            if env.is_main:
                metrics.write(record)
            meter.reset()
        if done in points:
            _save(s, done, point=True)
        if stopping and done not in points:
            _save(s, done, point=False)
        if stopping:
            bar.close()
            metrics.close()
            s.stop_signal, s.end_step = received, done
            return "interrupted"
    bar.close()
    metrics.close()
    s.end_step = total
    return "finished"


def _stop_signal(stop: ckpt.StopSignals, env: Any, done: int, *, due: bool) -> int | None:
    """The stop signal any rank has received, the same on every rank; looked at only on log and
    checkpoint steps and every STOP_CHECK_EVERY steps (None on other steps)."""
    if not due and done % STOP_CHECK_EVERY:
        return None
    return max_over_ranks(stop.received or 0, env) or None


def _check_finite(bad: torch.Tensor, step: int, env: Any, s: Session) -> None:
    if any_rank(bool(bad.item()), env):
        last = ckpt.latest_path(s.run_dir)
        kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written"
        raise ClipscaleError(f"loss became nan/inf at or before step {step} (lr {s.config.lr}); {kept}")


def _record(s: Session, out: StepResult, step: int, lr: float, meter: Meter, peak: float | None
            ) -> dict[str, Any]:
    samples_per_s, wait = meter.rates()
    samples = step * s.config.batch_size
    record = {
        "step": step, "samples_seen": samples, "compute": s.gmacs * samples,
        "loss": all_reduce_sum(float(out.loss.item()), s.env) / s.env.world_size,  # local loss: the mean
        "lr": lr, "logit_scale": float(out.logit_scale.item()), "samples_per_s": samples_per_s,
        "data_wait_frac": wait, "skipped_samples": _skipped_total(s),
        "grad_norm": None if out.grad_norm is None else float(out.grad_norm.item()),
    }
    utilisation = mfu(s.gmacs, samples_per_s, peak, world_size=s.env.world_size)
    if utilisation is not None:
        record["mfu"] = utilisation
    return record


def _skipped_total(s: Session) -> int:
    return int(sum(s.index_skipped.get(k, 0) for k in ("incomplete_samples",))
               + all_reduce_sum(float(s.decode_skipped), s.env))


def _save(s: Session, step: int, *, point: bool) -> None:
    """latest.pt (resumable) always; the point checkpoint (weights + metadata) at points."""
    ckpt.check_finite_weights(s.model, step=step, run_dir=s.run_dir, env=s.env)  # never save nan weights
    samples = step * s.config.batch_size
    model = checkpoint_model(s.model)  # collective under FSDP: every rank gathers, rank 0 writes
    train_state = {"step": step, "samples_seen": samples, "rng": ckpt.rng_state(s.env.device),
                   "decode_skipped": int(all_reduce_sum(float(s.decode_skipped), s.env)),
                   "scaler": s.scaler.state_dict(), "world_size": s.env.world_size}
    if point:
        path = s.checkpointer.save(ckpt.point_path(s.run_dir, samples), model=model, step=step,
                                   samples_seen=samples)
        if s.env.is_main and s.config.eval_suite:
            run_eval_hook(path, suite=s.config.eval_suite, data_root=s.config.eval_data_root,
                          run_dir=s.run_dir, device=s.env.device.type)
    s.checkpointer.save(ckpt.latest_path(s.run_dir), model=model, step=step, samples_seen=samples,
                        optimizer_state=optimizer_state(s.model, s.optimizer),
                        train_state=train_state)
    wait_for_main(s.env)  # the other ranks wait here, not in the next step's collective


def _finish(s: Session, state: str) -> dict[str, Any]:
    cfg = s.config
    step = s.end_step
    decode_skipped = int(all_reduce_sum(float(s.decode_skipped), s.env))
    samples = step * cfg.batch_size
    summary = {
        "state": state, "model": cfg.model, "samples_seen": samples, "steps": step,
        "compute": s.gmacs * samples, "gmacs": s.gmacs, "unique_samples": s.unique_samples,
        "skipped_samples": s.index_skipped.get("incomplete_samples", 0) + decode_skipped,
        "skipped": {**s.index_skipped, "corrupt_samples": decode_skipped},
        "wall_time_s": time.time() - s.started, "world_size": s.env.world_size, "lr": cfg.lr,
        "resumed_from_step": s.start_step,  # where this session began: 0, or the step of latest.pt
        "threads": torch.get_num_threads(),  # intra-op threads it trained with (train/threads.py)
        "checkpoints": sorted(p.name for p in (s.run_dir / "checkpoints").glob("samples_*.pt")),
    }
    if state == "interrupted":
        summary["signal"] = signal.Signals(s.stop_signal).name
    if s.env.is_main:
        atomic_write_json(s.run_dir / "summary.json", summary)
        if state == "finished" and not cfg.keep_latest:  # nothing left to resume: drop its 64 MB
            ckpt.latest_path(s.run_dir).unlink(missing_ok=True)
    return summary

