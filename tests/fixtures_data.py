"""Session fixtures of the data stage: small synthetic training shards and eval sets, built once.

Other stages' tests use these instead of generating their own data:
`synth_train_shards` -> Path of DIR with 00000.tar + meta.json (2,000 samples, 32 px, seed 0, uniform);
`synth_eval_sets` -> Path of DIR with one CLIP_benchmark wds directory per task (200 images each).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TRAIN_SAMPLES = 2000
EVAL_SAMPLES_PER_TASK = 200


@pytest.fixture(scope="session")
def synth_train_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipscale.data.synth import write_train_shards

    out = tmp_path_factory.mktemp("synth") / "train"
    write_train_shards(out, samples=TRAIN_SAMPLES, seed=0, image_size=32, distribution="uniform")
    return out


@pytest.fixture(scope="session")
def synth_eval_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipscale.data.synth import write_eval_sets

    out = tmp_path_factory.mktemp("synth") / "eval"
    write_eval_sets(out, seed=0, image_size=32, samples_per_task=EVAL_SAMPLES_PER_TASK)
    return out
