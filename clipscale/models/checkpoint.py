"""Checkpoints that are plain open_clip checkpoints with our metadata beside the weights.

Layout: {"state_dict", "optimizer"?, "clipscale": {...}} (see ARCHITECTURE.md). open_clip's loader
reads "state_dict" and ignores the rest, and everything stored is weights_only-loadable (tensors,
numbers, strings, lists, dicts), so loading never executes code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipscale.errors import CheckpointError, ClipscaleError
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
    """A model ready to evaluate, with what is known about how it was trained.

    `samples_seen` and `compute` are None when the source does not say (a bare state dict, an
    open_clip_train run without params.txt): unknown, never guessed.
    """

    model: torch.nn.Module
    tokenizer: Tokenizer
    model_name: str
    meta: dict[str, Any]
    path: Path
    optimizer_state: dict[str, Any] | None = None
    source_format: str = "clipscale"

    @property
    def samples_seen(self) -> int | None:
        value = self.meta.get("samples_seen")
        return None if value is None else int(value)

    @property
    def compute(self) -> float | None:
        value = self.meta.get("compute")
        return None if value is None else float(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a constants.pkl and code: loading them runs code."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_weights_file(path: str | os.PathLike) -> Any:
    """Whatever a weights file holds, loaded without executing code (safetensors or weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise ClipscaleError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # truncated or not safetensors
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    if _is_torchscript(path):
        raise CheckpointError(f"{path}: refused: a TorchScript archive (it contains code), not a "
                              "weights-only checkpoint; save its state_dict() and evaluate that")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "allowed global" in text or "Unsupported global" in text:  # a pickle that would run code
            raise CheckpointError(f"{path}: refused: not a weights-only checkpoint") from None
        # torch's text suggests weights_only=False: keep only the unpickler's own reason
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        detail = reason[0] if "WeightsUnpickler error:" in text and reason else _first_line(exc)
        raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from None
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None


# The metadata every clipscale checkpoint carries, with the type each key must have.
META_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "model_config": (dict,), "tokenizer": (dict,), "step": (int,),
    "samples_seen": (int,), "compute": (int, float), "gmacs": (int, float),
}


def check_meta(path: Path, meta: Any) -> dict[str, Any]:
    """One line naming the file and the key when the metadata is missing or ill-typed."""
    if not isinstance(meta, dict):
        raise ClipscaleError(f"{path}: key 'clipscale' must be a dict of metadata, got {type(meta).__name__}")
    for key, types in META_TYPES.items():
        if key not in meta:
            raise ClipscaleError(f"{path}: checkpoint metadata lacks key 'clipscale.{key}'")
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ClipscaleError(f"{path}: key 'clipscale.{key}' must be {want}, got {type(value).__name__}")
    for key in ("vision_cfg", "text_cfg"):
        if not isinstance(meta["model_config"].get(key), dict):
            raise ClipscaleError(f"{path}: key 'clipscale.model_config.{key}' must be a dict")
    if not isinstance(meta["tokenizer"].get("kind"), str):
        raise ClipscaleError(f"{path}: key 'clipscale.tokenizer.kind' must be a string")
    return meta


def check_state_dict(path: Path, state: Any, key: str = "state_dict") -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ClipscaleError(f"{path}: key '{key}' must be a non-empty dict of parameter name -> tensor")
    return state


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload, validated; weights_only=True so a malicious file cannot run code."""
    path = Path(path)
    payload = load_weights_file(path)
    if not isinstance(payload, dict) or "state_dict" not in payload or "clipscale" not in payload:
        raise ClipscaleError(f"{path}: not a clipscale checkpoint (expected 'state_dict' and 'clipscale')")
    check_meta(path, payload["clipscale"])
    check_state_dict(path, payload["state_dict"])
    return payload


def load_weights_into(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict load; a mismatch is one line naming a few of the offending keys."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = model.state_dict()
        missing = sorted(set(own) - set(state))[:3]
        unexpected = sorted(set(state) - set(own))[:3]
        shapes = [k for k in own if k in state and own[k].shape != state[k].shape][:3]
        parts = (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes))
        detail = "; ".join(f"{label} {keys}" for label, keys in parts if keys)
        raise ClipscaleError(f"{path}: weights do not fit {what} ({detail or _first_line(exc)})") from None


def build_checked(path: Path, name: str, cfg: dict[str, Any]) -> torch.nn.Module:
    from clipscale.models.flops import _quiet_logging  # open_clip warns "initialized randomly"

    try:
        with _quiet_logging():
            return build_from_config(name, cfg)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as exc:
        raise ClipscaleError(f"{path}: key 'clipscale.model_config': cannot build model {name!r} "
                             f"({_first_line(exc)})") from None


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", with_optimizer: bool = False
) -> LoadedCheckpoint:
    """Rebuild the model from the stored config and load its weights, in eval mode."""
    path = Path(path)
    return load_checkpoint_payload(path, read_checkpoint(path), device=device, with_optimizer=with_optimizer)


def load_checkpoint_payload(path: Path, payload: Any, *, device: str | torch.device = "cpu",
                            with_optimizer: bool = False) -> LoadedCheckpoint:
    """`load_checkpoint` on a payload already read (validated here)."""
    if not isinstance(payload, dict) or "state_dict" not in payload or "clipscale" not in payload:
        raise ClipscaleError(f"{path}: not a clipscale checkpoint (expected 'state_dict' and 'clipscale')")
    meta = check_meta(path, payload["clipscale"])
    model = build_checked(path, meta["model"], meta["model_config"])
    load_weights_into(path, model, check_state_dict(path, payload["state_dict"]), f"model {meta['model']!r}")
    return LoadedCheckpoint(
        model=model.to(device).eval(),
        tokenizer=tokenizer_from_state(meta["tokenizer"], model_config=meta["model_config"]),
        model_name=meta["model"],
        meta=meta,
        path=path,
        optimizer_state=payload.get("optimizer") if with_optimizer else None,
    )


def write_open_clip_config(directory: str | os.PathLike, model_name: str, cfg: dict[str, Any]) -> Path:
    """Write `<dir>/<model>.json` so plain open_clip can register it with add_model_config."""
    from clipscale.io import atomic_write_json

    path = Path(directory) / f"{model_name}.json"
    atomic_write_json(path, cfg)
    return path
