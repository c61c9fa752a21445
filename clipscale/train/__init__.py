"""Contrastive pre-training by samples seen: `TrainConfig`, `load_train_config`, `train`.

`train` (torch, open_clip) is imported on first use so that `clipscale --help`, which imports
`clipscale.train.cli`, stays fast.
"""

from __future__ import annotations

from typing import Any

from clipscale.train.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train", "train_step"]


def __getattr__(name: str) -> Any:
    if name in ("train", "train_step"):
        from clipscale.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'clipscale.train' has no attribute {name!r}")
