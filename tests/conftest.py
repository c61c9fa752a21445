"""Shared test set-up: fixtures live in one plugin module per stage, so stages don't collide."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

pytest_plugins = ["tests.fixtures_data", "tests.fixtures_train"]


@pytest.fixture(scope="session", autouse=True)
def _cpu_threads() -> None:
    """Two cores in CI: keep torch from oversubscribing them."""
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _fresh_pixel_cache() -> None:
    """Each test starts with an empty process-wide eval pixel cache (evals/embed.py), so decode counts
    do not depend on which tests ran before."""
    import sys

    embed = sys.modules.get("clipscale.evals.embed")
    if embed is not None:
        embed._SHARED = None
