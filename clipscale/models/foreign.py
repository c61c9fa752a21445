"""Models other tools wrote: open_clip_train checkpoints and runs, hf-hub folders, bare state dicts.

`load_source` turns any of them into the same `LoadedCheckpoint` a clipscale checkpoint gives, so
evaluation, tables and fits treat them alike. Loading stays weights-only (safetensors or
`torch.load(weights_only=True)`, see checkpoint.load_weights_file). What a source does not say is
None, never guessed: samples seen come from open_clip_train's params.txt (train_num_samples x
epoch, else optimizer steps x global batch) or `--samples-seen`; GMACs are always traced
(`count_flops`) from the architecture, registered with open_clip under the record's model name.

source_format values: clipscale, open_clip_train, hf_hub, state_dict, openai.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

import torch

from clipscale.errors import ClipscaleError
from clipscale.models.checkpoint import (
    LoadedCheckpoint,
    build_checked,
    check_state_dict,
    load_weights_file,
    load_weights_into,
)
from clipscale.models.flops import _quiet_logging
from clipscale.models.tokenizer import OpenClipTokenizer

log = logging.getLogger(__name__)
LOCAL_DIR = "local-dir:"
HF_CONFIG = "open_clip_config.json"
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
              "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # in OpenAI's state dicts only
EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


def parse_params(path: Path) -> dict[str, Any]:
    """open_clip_train's params.txt: one `name: value` line per argument (values are Python reprs)."""
    params: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return params


def is_open_clip_train_run(path: Path) -> bool:
    return path.is_dir() and ((path / "params.txt").is_file() or any(epoch_checkpoints(path, strict=False)))


def epoch_checkpoints(run_dir: Path, *, strict: bool = True) -> list[Path]:
    """`checkpoints/epoch_N.pt` by N (epoch_latest.pt repeats the last one, so it is not a point)."""
    found = [p for p in (run_dir / "checkpoints").glob("epoch_*.pt") if EPOCH_RE.match(p.name)]
    found.sort(key=lambda p: int(EPOCH_RE.match(p.name).group(1)))
    if strict and not found:
        raise ClipscaleError(f"{run_dir / 'checkpoints'}: no epoch_*.pt checkpoints to evaluate")
    return found


def _params_for(path: Path) -> tuple[dict[str, Any], Path | None]:
    """params.txt of the run a checkpoint belongs to (logs/NAME/checkpoints/epoch_N.pt)."""
    for folder in (path.parent.parent, path.parent) if path.parent.name == "checkpoints" else (path.parent,):
        if (folder / "params.txt").is_file():
            return parse_params(folder / "params.txt"), folder / "params.txt"
    return {}, None


def _optimizer_steps(optimizer: Any) -> int | None:
    """AdamW keeps a per-parameter step count: the number of optimizer steps taken."""
    try:
        first = next(iter(optimizer["state"].values()))
        return int(first["step"])
    except (KeyError, TypeError, StopIteration, ValueError, RuntimeError):
        return None


def open_clip_train_samples(params: dict[str, Any], epoch: int, optimizer: Any) -> int | None:
    """Samples seen at the end of `epoch`, from params.txt; None when it cannot be known."""
    per_epoch = params.get("train_num_samples")
    if isinstance(per_epoch, int) and per_epoch > 0:
        return per_epoch * epoch
    batch, world = params.get("batch_size"), params.get("world_size", 1)
    accum = params.get("accum_freq", 1)
    steps = _optimizer_steps(optimizer)
    if steps is not None and all(isinstance(v, int) and v > 0 for v in (batch, world, accum)):
        return steps * batch * world * accum
    return None


def _forced_variant(name: str, params: dict[str, Any]) -> str:
    """The architecture open_clip_train built: its --force-* flags change the config."""
    from clipscale.models.registry import model_config

    cfg = model_config(name)
    suffix = ""
    if params.get("force_quick_gelu") and not cfg.get("quick_gelu"):
        cfg["quick_gelu"], suffix = True, suffix + "-quickgelu"
    size = params.get("force_image_size")
    if isinstance(size, int) and size != cfg["vision_cfg"].get("image_size"):
        cfg["vision_cfg"]["image_size"], suffix = size, suffix + f"-{size}px"
    if not suffix:
        return name
    register_as(name + suffix, cfg, "params.txt --force-*")
    return name + suffix


def register_as(name: str, cfg: dict[str, Any], where: str) -> None:
    """Register `name` -> `cfg`; an error if the name already means another architecture."""
    from clipscale.models.registry import _check_conflict, ensure_registered

    if not _check_conflict(name, cfg, where):
        ensure_registered(name, cfg)


def _check_model_name(name: Any, where: str) -> str:
    from clipscale.models.registry import list_models

    if not isinstance(name, str) or not name:
        raise ClipscaleError(f"{where}: no model name; pass --model NAME")
    if name not in list_models():
        raise ClipscaleError(f"{where}: model {name!r} is not a known architecture; pass "
                             "--model-config FILE.json to register it (see `clipscale models`)")
    return name


def _gmacs(name: str) -> float:
    from clipscale.models.flops import count_flops

    return float(count_flops(name).gmacs)


def _finish(model: torch.nn.Module, name: str, cfg: dict[str, Any], path: Path, fmt: str, *,
            samples_seen: int | None, tokenizer: Any = None, extra: dict[str, Any] | None = None,
            device: str | torch.device = "cpu") -> LoadedCheckpoint:
    from clipscale.models.registry import get_tokenizer

    gmacs = _gmacs(name)
    meta = {"model": name, "model_config": cfg, "samples_seen": samples_seen, "gmacs": gmacs,
            "compute": None if samples_seen is None else gmacs * samples_seen, **(extra or {})}
    return LoadedCheckpoint(model=model.to(device).eval(), tokenizer=tokenizer or get_tokenizer(name),
                            model_name=name, meta=meta, path=path, source_format=fmt)


def load_named(path: Path, name: str, state: dict[str, torch.Tensor], fmt: str, *,
               samples_seen: int | None, extra: dict[str, Any] | None = None,
               device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Weights into the registered architecture `name` (open_clip's 3rd-party conversions applied)."""
    from open_clip.convert import convert_state_dict

    from clipscale.models.registry import model_config

    cfg = model_config(name)
    model = build_checked(path, name, cfg)
    state = {k.removeprefix("module."): v for k, v in state.items() if k not in OPENAI_EXTRAS}
    state = convert_state_dict(model, state)
    scale = state.get("logit_scale")
    if scale is not None and scale.ndim != model.logit_scale.ndim:
        state["logit_scale"] = scale.reshape(model.logit_scale.shape)
    load_weights_into(path, model, {k: v.float() for k, v in state.items()}, f"model {name!r}")
    return _finish(model, name, cfg, path, fmt, samples_seen=samples_seen, extra=extra, device=device)


def _openai_config(model: torch.nn.Module) -> dict[str, Any]:
    """The open_clip config of a model built by build_model_from_openai_state_dict (ViT towers)."""
    v = model.visual
    if not hasattr(v, "conv1") or not hasattr(v, "transformer"):
        raise ClipscaleError("OpenAI ResNet state dicts: pass --model (e.g. RN50-quickgelu)")
    return {
        "embed_dim": int(model.text_projection.shape[1]), "quick_gelu": True,
        "vision_cfg": {"image_size": int(v.image_size[0]), "layers": len(v.transformer.resblocks),
                       "width": int(v.conv1.out_channels), "patch_size": int(v.patch_size[0])},
        "text_cfg": {"context_length": int(model.context_length), "vocab_size": int(model.vocab_size),
                     "width": int(model.transformer.width),
                     "heads": int(model.transformer.resblocks[0].attn.num_heads),
                     "layers": int(model.transformer.layers)},
    }


def load_openai(path: Path, state: dict[str, torch.Tensor], *, samples_seen: int | None,
                device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """An OpenAI-layout state dict: open_clip infers the architecture and converts the weights."""
    from open_clip.model import build_model_from_openai_state_dict

    from clipscale.models.registry import ensure_registered, find_registered

    try:
        model = build_model_from_openai_state_dict(dict(state), cast_dtype=None).float()
    except (KeyError, RuntimeError, AssertionError, ValueError) as exc:
        raise ClipscaleError(f"{path}: not a loadable OpenAI-format state dict ({exc!s:.200})") from None
    try:
        cfg = _openai_config(model)
    except ClipscaleError as exc:
        raise ClipscaleError(f"{path}: {exc}") from None
    name = find_registered(cfg) or f"openai-{path.stem}"
    ensure_registered(name, cfg)
    return _finish(model, name, cfg, path, "openai", samples_seen=samples_seen, device=device)


def hf_weights(folder: Path) -> Path:
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise ClipscaleError(f"{folder}: no weights file ({', '.join(HF_WEIGHTS[:3])})")


def load_hf_dir(folder: Path, *, model_name: str | None, samples_seen: int | None,
                device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """An open_clip hf-hub export (open_clip_config.json + weights), built by open_clip itself."""
    import json

    import open_clip

    from clipscale.models.registry import find_registered

    folder = folder.resolve()
    try:
        doc = json.loads((folder / HF_CONFIG).read_text(encoding="utf-8"))
        cfg, preprocess = doc["model_cfg"], doc.get("preprocess_cfg", {})
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ClipscaleError(f"{folder / HF_CONFIG}: not an open_clip hf-hub config ({exc!r})") from None
    name = model_name or find_registered(cfg) or folder.name
    register_as(name, cfg, str(folder / HF_CONFIG))
    weights = hf_weights(folder)
    with _quiet_logging():  # weights are loaded below, weights-only: open_clip's "randomly" is moot
        model = open_clip.create_model(f"{LOCAL_DIR}{folder}", load_weights=False, pretrained_text=False)
    load_weights_into(weights, model, check_state_dict(weights, load_weights_file(weights)), f"{folder}")
    tokenizer = OpenClipTokenizer(f"{LOCAL_DIR}{folder}")
    eval_cfg = {**cfg, "preprocess_cfg": preprocess} if preprocess else cfg
    return _finish(model, name, eval_cfg, weights, "hf_hub", samples_seen=samples_seen, tokenizer=tokenizer,
                   device=device)


def _load_open_clip_train(path: Path, payload: dict[str, Any], *, model_name: str | None,
                          samples_seen: int | None, device: str | torch.device) -> LoadedCheckpoint:
    params, params_path = _params_for(path)
    name = _check_model_name(model_name or params.get("model"),
                             str(params_path or path) + ("" if params_path else " (no params.txt)"))
    if model_name is None:
        name = _forced_variant(name, params)
    epoch = payload.get("epoch")
    if samples_seen is None and isinstance(epoch, int):
        samples_seen = open_clip_train_samples(params, epoch, payload.get("optimizer"))
    if samples_seen is None:
        log.warning("%s: samples seen unknown (no params.txt train_num_samples or optimizer steps); "
                    "compute is null (pass --samples-seen N)", path)
    state = check_state_dict(path, payload["state_dict"])
    return load_named(path, name, state, "open_clip_train", samples_seen=samples_seen,
                      extra={"epoch": epoch, "run": payload.get("name"),
                             "steps": _optimizer_steps(payload.get("optimizer"))}, device=device)


def load_source(source: str | Path, *, model: str | None = None, samples_seen: int | None = None,
                device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load one model from any supported SOURCE; `model`/`samples_seen` say what the file cannot."""
    from clipscale.models.checkpoint import load_checkpoint_payload

    text = str(source)
    if text.startswith(LOCAL_DIR) or Path(text).is_dir():
        folder = Path(text.removeprefix(LOCAL_DIR))
        if not (folder / HF_CONFIG).is_file():
            raise ClipscaleError(f"{folder}: no {HF_CONFIG}; not an open_clip hf-hub folder")
        return load_hf_dir(folder, model_name=model, samples_seen=samples_seen, device=device)
    path = Path(text)
    payload = load_weights_file(path)
    if isinstance(payload, dict) and "clipscale" in payload:
        loaded = load_checkpoint_payload(path, payload, device=device)
        if samples_seen is not None:
            loaded.meta.update(samples_seen=samples_seen, compute=loaded.meta["gmacs"] * samples_seen)
        return loaded
    if isinstance(payload, dict) and "state_dict" in payload and "epoch" in payload:
        return _load_open_clip_train(path, payload, model_name=model, samples_seen=samples_seen,
                                     device=device)
    state = payload["state_dict"] if isinstance(payload, dict) and "state_dict" in payload else payload
    state = check_state_dict(path, state)
    if model is not None:
        return load_named(path, _check_model_name(model, "--model"), state, "state_dict",
                          samples_seen=samples_seen, device=device)
    if any(k in state for k in OPENAI_EXTRAS):
        return load_openai(path, state, samples_seen=samples_seen, device=device)
    raise ClipscaleError(f"{path}: a bare state dict does not name its architecture; pass --model NAME "
                         "(with --model-config FILE.json for a custom one)")


def weights_path(source: str | Path) -> Path:
    """The file whose bytes identify a source (its content hash keys results and caches)."""
    text = str(source)
    if text.startswith(LOCAL_DIR) or Path(text).is_dir():
        return hf_weights(Path(text.removeprefix(LOCAL_DIR)))
    path = Path(text)
    if not path.is_file():
        raise ClipscaleError(f"{path}: checkpoint file not found")
    return path


__all__ = ["epoch_checkpoints", "is_open_clip_train_run", "load_source", "parse_params", "weights_path"]
