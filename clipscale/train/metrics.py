"""metrics.jsonl, the progress bar, throughput/data-wait accounting and the MFU estimate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from clipscale.errors import ClipscaleError
from clipscale.io import append_jsonl, atomic_write_text, dumps, read_jsonl

# Dense bf16 peak TFLOP/s of one device by GPU name fragment (vendor datasheets; first match wins),
# for MFU when not configured.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                    "A10": 125.0, "L4": 121.0, "V100": 125.0, "4090": 165.0, "3090": 71.0}


class MetricsWriter:
    """Appends one strict-JSON object per logged step; optionally mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ClipscaleError("train config field 'tensorboard': the 'tensorboard' package is not "
                                     "installed (pip install tensorboard)") from None
            self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again)."""
        if not self.path.exists():
            return
        keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "samples_seen") and isinstance(value, int | float):
                    self._tb.add_scalar(f"train/{key}", value, record["samples_seen"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


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


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="sample", unit_scale=True,
                disable=None if enabled else True, dynamic_ncols=True, smoothing=0.1)
