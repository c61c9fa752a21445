"""Evaluation: zero-shot classification and retrieval, linear probes and fine-tuning, on local data.

Public API (imported lazily so `clipscale --help` does not import torch):
`evaluate_checkpoint`, `evaluate_run`, `evaluate_collection`, `load_collection`, `load_suite`,
`list_evaluators`.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "evaluate_checkpoint": "clipscale.evals.runner",
    "evaluate_run": "clipscale.evals.runner",
    "evaluate_collection": "clipscale.evals.collection",
    "load_collection": "clipscale.evals.collection",
    "load_suite": "clipscale.evals.suite",
    "list_evaluators": "clipscale.evals.registry",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'clipscale.evals' has no attribute {name!r}")
