"""Session fixtures of the train stage: one short tiny-S0 run other stages' tests can read.

`tiny_trained_run` -> Path of a finished run directory (config.json, open_clip_config/tiny-S0.json,
metrics.jsonl, checkpoints/samples_000000003200.pt and samples_000000006400.pt, latest.pt (kept:
keep_latest = true), summary.json): tiny-S0, 6,400 samples seen at batch 32 on `synth_train_shards`
(~10 s on 2 cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TINY_RUN: dict[str, Any] = {
    "model": "tiny-S0",
    "samples_seen": 6400,
    "batch_size": 32,
    "lr": 2e-3,
    "checkpoint_points": [0.5, 1.0],
    "workers": 0,
    "threads": 1,
    "log_every": 10,
    "progress": False,
    "resume": "none",
}


def tiny_config(shards: Path, out: Path, **overrides: Any) -> Any:
    """A TrainConfig for a short tiny-S0 run on `shards` (tests change what they need)."""
    from clipscale.train import TrainConfig

    return TrainConfig(**{**TINY_RUN, "train_data": str(shards), "output_dir": str(out), **overrides})


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory: pytest.TempPathFactory, synth_train_shards: Path) -> Path:
    from clipscale.train import train

    out = tmp_path_factory.mktemp("train") / "tiny-S0"
    train(tiny_config(synth_train_shards, out, keep_latest=True))  # resume tests start from its latest.pt
    return out
