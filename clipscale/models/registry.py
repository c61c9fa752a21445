"""One registry over the tiny ladder and open_clip's model zoo.

Ladder models are built from their config with open_clip's own `CLIP` class, so their checkpoints
load in plain open_clip; open_clip names go through `open_clip.create_model` (never pretrained
downloads: weights only come from local checkpoints).
"""

from __future__ import annotations

import functools
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


def list_models() -> list[str]:
    """Ladder names first (smallest to largest), then every open_clip architecture.

    A ladder config registered in open_clip (to load a checkpoint in plain open_clip) is listed once.
    """
    return [*LADDER, *(name for name in _open_clip_names() if name not in LADDER)]


def is_ladder(name: str) -> bool:
    return name in LADDER


def _check_name(name: str) -> None:
    if name in LADDER or name in _open_clip_names():
        return
    valid = ", ".join(list_models())
    raise ClipscaleError(f"unknown model {name!r}; valid models: {valid}")


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
    return open_clip.create_model(name, pretrained=None, device="cpu", precision="fp32")


def create_model(name: str, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A freshly initialised fp32 CLIP (open_clip's class) in train mode on `device`.

    Precision is a training concern (autocast), applied by the trainer, not baked into weights.
    """
    _check_name(name)
    model = build_from_config(name, model_config(name))
    return model.to(device).train()


def get_tokenizer(name: str) -> Tokenizer:
    """Word tokenizer for ladder models (synthetic vocabulary), open_clip's BPE otherwise."""
    if name in LADDER:
        return WordTokenizer(VOCABULARY, CONTEXT_LENGTH)
    _check_name(name)
    return OpenClipTokenizer(name)
