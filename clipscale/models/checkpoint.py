"""Checkpoints that are plain open_clip checkpoints with our metadata beside the weights.

Layout: {"state_dict", "optimizer"?, "clipscale": {...}} (see ARCHITECTURE.md). open_clip's loader
reads "state_dict" and ignores the rest, and everything stored is weights_only-loadable (tensors,
numbers, strings, lists, dicts), so loading never executes code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipscale.errors import ClipscaleError
from clipscale.models.registry import build_from_config
from clipscale.models.tokenizer import Tokenizer, tokenizer_from_state


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    model_name: str,
    model_config: dict[str, Any],
    tokenizer: Tokenizer,
    step: int,
    samples_seen: int,
    compute: float,
    gmacs: float,
    optimizer_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model_name,
        "model_config": model_config,
        "tokenizer": tokenizer.state(),
        "step": int(step),
        "samples_seen": int(samples_seen),
        "compute": float(compute),
        "gmacs": float(gmacs),
        **(extra or {}),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {"state_dict": state, "clipscale": meta}
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    from clipscale.io import KeepWriteError, fsync_dir, writing

    try:
        with writing(path), open(tmp, "wb") as f:  # a full disk: "no space left on DIR", not torch's
            out = KeepWriteError(f)
            try:
                torch.save(payload, out)
            except RuntimeError:  # "enforce fail at inline_container.cc": the OSError behind it, if any
                out.reraise()
                raise
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    tokenizer: Tokenizer
    model_name: str
    meta: dict[str, Any]
    path: Path
    optimizer_state: dict[str, Any] | None = None

    @property
    def samples_seen(self) -> int:
        return int(self.meta["samples_seen"])

    @property
    def compute(self) -> float:
        return float(self.meta["compute"])


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload, validated; weights_only=True so a malicious file cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise ClipscaleError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise ClipscaleError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload or "clipscale" not in payload:
        raise ClipscaleError(f"{path}: not a clipscale checkpoint (expected 'state_dict' and 'clipscale')")
    return payload


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", with_optimizer: bool = False
) -> LoadedCheckpoint:
    """Rebuild the model from the stored config and load its weights, in eval mode."""
    payload = read_checkpoint(path)
    meta = payload["clipscale"]
    model = build_from_config(meta["model"], meta["model_config"])
    state = {k.removeprefix("module."): v for k, v in payload["state_dict"].items()}
    model.load_state_dict(state)
    return LoadedCheckpoint(
        model=model.to(device).eval(),
        tokenizer=tokenizer_from_state(meta["tokenizer"]),
        model_name=meta["model"],
        meta=meta,
        path=Path(path),
        optimizer_state=payload.get("optimizer") if with_optimizer else None,
    )


def write_open_clip_config(directory: str | os.PathLike, model_name: str, cfg: dict[str, Any]) -> Path:
    """Write `<dir>/<model>.json` so plain open_clip can register it with add_model_config."""
    from clipscale.io import atomic_write_json

    path = Path(directory) / f"{model_name}.json"
    atomic_write_json(path, cfg)
    return path
