"""Models: one registry over the tiny ladder and open_clip's zoo, tokenizers, checkpoints, FLOPs.

Public names resolve lazily (PEP 562) so that `clipscale --help`, which imports this package's
`cli` module, does not pay for importing torch; open_clip is imported only on first real use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "LoadedCheckpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "write_open_clip_config": "checkpoint",
    "LADDER": "ladder",
    "ladder_config": "ladder",
    "context_length": "registry",
    "create_model": "registry",
    "get_tokenizer": "registry",
    "image_size": "registry",
    "is_ladder": "registry",
    "list_models": "registry",
    "model_config": "registry",
    "register_model_config": "registry",
    "register_model_configs": "registry",
    "load_source": "foreign",
    "Tokenizer": "tokenizer",
    "WordTokenizer": "tokenizer",
    "tokenizer_from_state": "tokenizer",
    "FlopsReport": "flops",
    "count_flops": "flops",
    "run_compute": "flops",
    "train_flops": "flops",
}

__all__ = [
    "LADDER",
    "FlopsReport",
    "LoadedCheckpoint",
    "Tokenizer",
    "WordTokenizer",
    "context_length",
    "count_flops",
    "create_model",
    "get_tokenizer",
    "image_size",
    "is_ladder",
    "ladder_config",
    "list_models",
    "load_checkpoint",
    "load_source",
    "model_config",
    "read_checkpoint",
    "register_model_config",
    "register_model_configs",
    "run_compute",
    "save_checkpoint",
    "tokenizer_from_state",
    "train_flops",
    "write_open_clip_config",
]

if TYPE_CHECKING:  # static analysers see the real names
    from clipscale.models.checkpoint import (
        LoadedCheckpoint,
        load_checkpoint,
        read_checkpoint,
        save_checkpoint,
        write_open_clip_config,
    )
    from clipscale.models.flops import FlopsReport, count_flops, run_compute, train_flops
    from clipscale.models.foreign import load_source
    from clipscale.models.ladder import LADDER, ladder_config
    from clipscale.models.registry import (
        context_length,
        create_model,
        get_tokenizer,
        image_size,
        is_ladder,
        list_models,
        model_config,
        register_model_config,
        register_model_configs,
    )
    from clipscale.models.tokenizer import Tokenizer, WordTokenizer, tokenizer_from_state


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipscale.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"clipscale.models.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
