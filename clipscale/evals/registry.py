"""Explicit registry of evaluators: task name -> a class with one method, `evaluate(bundle, dataset)`.

Each evaluator is a dataclass whose fields are its options (from the suite); `evaluate` returns
named metrics (dict[str, float]). Classes are named by import path so that listing them is cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol

from clipscale.errors import ClipscaleError

_EVALUATORS: dict[str, str] = {
    "zeroshot_classification": "clipscale.evals.zeroshot:ZeroShotClassification",
    "zeroshot_retrieval": "clipscale.evals.retrieval:ZeroShotRetrieval",
    "linear_probe": "clipscale.evals.linear_probe:LinearProbe",
    "finetune": "clipscale.evals.finetune:FineTune",
}


class Evaluator(Protocol):
    def evaluate(self, bundle: Any, dataset: Any) -> dict[str, float]: ...


def list_evaluators() -> list[str]:
    return list(_EVALUATORS)


def evaluator_class(name: str) -> type:
    if name not in _EVALUATORS:
        raise ClipscaleError(f"unknown evaluator {name!r}; valid: {', '.join(_EVALUATORS)}")
    module, _, attr = _EVALUATORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def check_options(name: str, options: dict[str, Any], where: str) -> None:
    valid = [f.name for f in dataclasses.fields(evaluator_class(name))]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ClipscaleError(f"{where}: unknown option(s) {unknown} for {name}; valid: {valid}")
    make_evaluator(name, options, where=where)


def make_evaluator(name: str, options: dict[str, Any], *, where: str = "suite") -> Evaluator:
    try:
        return evaluator_class(name)(**options)
    except (TypeError, ValueError) as exc:
        raise ClipscaleError(f"{where}: bad options for {name}: {exc}") from None


def task_name(name: str, options: dict[str, Any]) -> str:
    """Record task name: linear probes on k examples per class are 'linear_probe_<k>shot'."""
    k = options.get("fewshot_k")
    return f"{name}_{k}shot" if name == "linear_probe" and k else name
