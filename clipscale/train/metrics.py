"""metrics.jsonl and its trackers (TensorBoard, wandb), progress on stderr, throughput/data-wait
accounting and the MFU estimate."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from clipscale.io import append_jsonl, atomic_write_text, dumps, read_jsonl

# Dense bf16 peak TFLOP/s of one device by GPU name fragment (vendor datasheets; first match wins),
# for MFU when not configured.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                    "A10": 125.0, "L4": 121.0, "V100": 125.0, "4090": 165.0, "3090": 71.0}


class MetricsWriter:
    """Appends one strict-JSON object per logged step; mirrors its numbers to the report_to trackers.

    TensorBoard events go to RUN_DIR/tensorboard/, wandb's files to RUN_DIR/wandb/ (offline unless
    WANDB_MODE says otherwise: clusters often have no network; `wandb sync` uploads them later).
    """

    def __init__(self, run_dir: Path, *, report_to: Sequence[str] = (), config: dict[str, Any] | None = None
                 ) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._tb = self._wandb = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            import wandb

            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "clipscale"), name=run_dir.name,
                                     dir=str(run_dir), config=config or {},
                                     mode=os.environ.get("WANDB_MODE", "offline"),
                                     settings=wandb.Settings(console="off"))  # our stderr stays ours

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again)."""
        if not self.path.exists():
            return
        keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)
        scalars = {f"train/{k}": v for k, v in record.items()
                   if k not in ("step", "samples_seen") and type(v) in (int, float)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, record["samples_seen"])
        if self._wandb is not None:
            self._wandb.log({**scalars, "train/samples_seen": record["samples_seen"]})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


class Meter:
    """Wall time and time spent waiting for data between two log points."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.wait = 0.0
        self.samples = 0

    def rates(self) -> tuple[float, float]:
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        return self.samples / elapsed, min(1.0, self.wait / elapsed)


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def mfu(gmacs: float, samples_per_s: float, peak: float | None, *, world_size: int) -> float | None:
    """Model FLOPs utilisation: 6 FLOPs per forward MAC (fwd + bwd) per sample, at the global
    samples/s of all `world_size` devices, over their summed peak (`peak` is one device's TFLOP/s)."""
    if not peak:
        return None
    return 6e9 * gmacs * samples_per_s / (world_size * peak * 1e12)


# Progress lines (stderr not a terminal: SLURM and CI logs) come at log steps, at most this often.
PROGRESS_LINE_SECONDS = 10.0


class Progress:
    """Training progress on stderr: a tqdm bar on a terminal, else one line per log interval
    (samples seen, samples/s, loss, ETA), at most every PROGRESS_LINE_SECONDS, plus the last one."""

    def __init__(self, total: int, initial: int, *, enabled: bool, label: str, lines: bool | None = None
                 ) -> None:
        self.total, self.done, self.label = total, initial, label
        self.lines = enabled and (not sys.stderr.isatty() if lines is None else lines)
        self._bar = None
        if enabled and not self.lines:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="sample", unit_scale=True,
                             dynamic_ncols=True, smoothing=0.1)
        self._t0, self._start, self._last = time.perf_counter(), initial, -math.inf

    def update(self, samples: int) -> None:
        self.done += samples
        if self._bar is not None:
            self._bar.update(samples)

    def logged(self, record: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        now = time.perf_counter()
        if not self.lines or (now - self._last < PROGRESS_LINE_SECONDS and self.done < self.total):
            return
        self._last = now
        rate = (self.done - self._start) / max(1e-9, now - self._t0)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        print(f"{self.label}: {self.done:,}/{self.total:,} samples ({100 * self.done / self.total:.0f}%), "
              f"{record['samples_per_s']:.0f} samples/s, loss {record['loss']:.4f}, ETA {format_eta(eta)}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
