"""One registry over the tiny ladder and open_clip's model zoo.

Ladder models are built from their config with open_clip's own `CLIP` class, so their checkpoints
load in plain open_clip; open_clip names go through `open_clip.create_model` (never pretrained
downloads: weights only come from local checkpoints).

Custom architectures (`--model-config FILE.json`, `model_configs = [...]`) are registered with
open_clip's own `add_model_config` for the current process, so every stage (train, eval, flops,
studies) and plain open_clip calls see the same name -> config mapping.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from clipscale.data.synth.vocab import VOCABULARY
from clipscale.errors import ClipscaleError
from clipscale.models.ladder import CONTEXT_LENGTH, LADDER, ladder_config
from clipscale.models.tokenizer import OpenClipTokenizer, Tokenizer, WordTokenizer


@functools.cache
def _open_clip_names() -> tuple[str, ...]:
    import open_clip

    return tuple(open_clip.list_models())


def _valid_config(cfg: Any) -> bool:
    return isinstance(cfg, dict) and isinstance(cfg.get("embed_dim"), int) and all(
        isinstance(cfg.get(k), dict) for k in ("vision_cfg", "text_cfg"))


def _read_config_file(path: Path) -> tuple[dict[str, Any], bool]:
    """The model config in FILE.json, and whether the file is a plain one open_clip reads as is."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipscaleError(f"{path}: model config file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClipscaleError(f"{path}: not a JSON model config ({exc})") from None
    plain = not (isinstance(cfg, dict) and "model_cfg" in cfg)
    if not plain:  # an hf-hub open_clip_config.json
        cfg = cfg["model_cfg"]
    if not _valid_config(cfg):
        raise ClipscaleError(f"{path}: an open_clip model config needs 'embed_dim' (int), "
                             "'vision_cfg' and 'text_cfg' (tables)")
    return cfg, plain


def _check_conflict(name: str, cfg: dict[str, Any], where: str) -> bool:
    """True when `name` is already registered with this config; an error if with another."""
    if name in LADDER:
        if cfg == ladder_config(name):  # e.g. a run's own open_clip_config/tiny-S0.json
            return True
        raise ClipscaleError(f"{where}: model name {name!r} is a built-in ladder size; rename the config")
    if name not in _open_clip_names():
        return False
    import open_clip

    if open_clip.get_model_config(name) != cfg:
        raise ClipscaleError(f"{where}: model {name!r} is already registered with a different config; "
                             "use another name")
    return True


def register_model_config(path: str | os.PathLike) -> list[str]:
    """Register FILE.json (model name = file stem) or every *.json of a directory; returns the names."""
    import open_clip

    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    names = []
    if not files:
        raise ClipscaleError(f"{path}: no *.json model configs in this directory")
    for file in files:
        cfg, plain = _read_config_file(file)
        if not _check_conflict(file.stem, cfg, str(file)):
            if plain:
                open_clip.add_model_config(file)
                _open_clip_names.cache_clear()
            else:
                ensure_registered(file.stem, cfg)
        names.append(file.stem)
    return names


def register_model_configs(paths: Iterable[str | os.PathLike]) -> list[str]:
    return [name for path in paths for name in register_model_config(path)]


@functools.cache
def _scratch_dir() -> Path:
    """Process-private folder for configs known only in memory (hf-hub folders, checkpoints)."""
    path = Path(tempfile.mkdtemp(prefix="clipscale-configs-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def ensure_registered(name: str, cfg: dict[str, Any]) -> None:
    """Make `name` -> `cfg` known to open_clip in this process (no-op if already known)."""
    import open_clip

    if name in LADDER or name in _open_clip_names():
        return
    if not _valid_config(cfg):
        raise ClipscaleError(f"model {name!r}: not an open_clip model config "
                             "(embed_dim, vision_cfg, text_cfg)")
    file = _scratch_dir() / f"{name}.json"
    file.write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(file)
    _open_clip_names.cache_clear()


def find_registered(cfg: dict[str, Any]) -> str | None:
    """The registered open_clip name whose config equals `cfg`, if any (ladder included)."""
    import open_clip

    for name in LADDER:
        if ladder_config(name) == cfg:
            return name
    for name in _open_clip_names():
        if open_clip.get_model_config(name) == cfg:
            return name
    return None


def list_models() -> list[str]:
    """Ladder names first (smallest to largest), then every open_clip architecture.

    A ladder config registered in open_clip (to load a checkpoint in plain open_clip) is listed once.
    """
    return [*LADDER, *(name for name in _open_clip_names() if name not in LADDER)]


def is_ladder(name: str) -> bool:
    return name in LADDER


CLI_CUSTOM_HINT = "--model-config FILE.json"
STUDY_CUSTOM_HINT = 'model_configs = ["FILE.json"] in [study]'


class UnknownModelError(ClipscaleError):
    """A model name neither the ladder nor open_clip knows: the closest names (a typo's intended one), not
    the ~150 valid ones. `text(custom=...)` says how a custom architecture is registered where the name
    was given: `--model-config` on the command line (the default message), `model_configs` in a study."""

    def __init__(self, name: str, close: list[str], total: int) -> None:
        self.name, self.close, self.total = name, close, total
        super().__init__(self.text())

    def text(self, custom: str = CLI_CUSTOM_HINT) -> str:
        guess = f"; did you mean {' or '.join(self.close)}?" if self.close else ""
        return (f"unknown model {self.name!r}{guess} (`clipscale models` lists all {self.total}; a custom "
                f"architecture: {custom})")


CONFUSABLE = str.maketrans({"o": "0", "i": "1", "l": "1"})  # tiny-SO (letter O) is tiny-S0


def closest_models(name: str, n: int = 3) -> list[str]:
    """Valid model names closest to `name`, best first: difflib's ratio, case-insensitive, with look-alike
    characters (O/0, I/l/1) equal and a transposition (ViT-H-41) ahead of other one-character changes;
    only the names within 0.05 of the best, so a clear match is named alone."""
    import difflib

    key = name.lower().translate(CONFUSABLE)
    scored = []
    for m in list_models():
        other = m.lower().translate(CONFUSABLE)
        score = difflib.SequenceMatcher(None, key, other).ratio() + 0.01 * (sorted(key) == sorted(other))
        if score >= 0.6:
            scored.append((score, m))
    scored.sort(key=lambda t: -t[0])  # stable: equal scores keep list_models' order (ladder first)
    return [m for score, m in scored[:n] if score >= scored[0][0] - 0.05]


def _check_name(name: str) -> None:
    if name in LADDER or name in _open_clip_names():
        return
    raise UnknownModelError(name, closest_models(name), len(list_models()))


def model_config(name: str) -> dict[str, Any]:
    """The open_clip config dict (embed_dim, vision_cfg, text_cfg, ...) of a model name."""
    if name in LADDER:
        return ladder_config(name)
    _check_name(name)
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ClipscaleError(f"open_clip has no config for model {name!r}")
    return cfg


def image_size(name: str) -> int:
    size = model_config(name)["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


def context_length(name: str) -> int:
    return int(model_config(name)["text_cfg"].get("context_length", 77))


def build_from_config(name: str, cfg: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a model from a stored config (ladder) or its open_clip name."""
    import open_clip

    if name in LADDER or name not in _open_clip_names():
        fields = {k: v for k, v in cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")}
        return open_clip.model.CLIP(**fields)
    return _init_left_empty(open_clip.create_model(name, pretrained=None, device="cpu", precision="fp32"))


def _init_left_empty(model: torch.nn.Module) -> torch.nn.Module:
    """open_clip 3.3's CoCa decoder keeps `text_projection` as `torch.empty` memory (NaN, depending on
    allocator history): its `init_parameters`, which would set it, fails (`self.transformer`) and is
    never called. Initialise it as that method intends, normal with std width^-0.5."""
    from open_clip.transformer import MultimodalTransformer

    for module in model.modules():
        if isinstance(module, MultimodalTransformer) and module.text_projection is not None:
            torch.nn.init.normal_(module.text_projection, std=module.width**-0.5)
    return model


def create_model(name: str, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A freshly initialised fp32 CLIP (open_clip's class) in train mode on `device`.

    Precision is a training concern (autocast), applied by the trainer, not baked into weights.
    """
    _check_name(name)
    model = build_from_config(name, model_config(name))
    return model.to(device).train()


def get_tokenizer(name: str) -> Tokenizer:
    """Word tokenizer for word-ladder models (synthetic vocabulary), open_clip's BPE otherwise (the BPE
    twins `tiny-S<i>-bpe` at the ladder's context length, as plain open_clip builds it from their config)."""
    if name in LADDER:
        if LADDER[name].bpe:
            return OpenClipTokenizer(name, context_length=CONTEXT_LENGTH, model_config=ladder_config(name))
        return WordTokenizer(VOCABULARY, CONTEXT_LENGTH)
    _check_name(name)
    return OpenClipTokenizer(name)
