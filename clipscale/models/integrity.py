"""Are a model's weights usable? A checkpoint with NaN/inf parameters evaluates to chance-level metrics
without any error, so evals (and anything else that loads weights for use) check first."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from clipscale.errors import CheckpointError


def _tensors(weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """A module's parameters (buffers such as attention masks may legitimately hold -inf), or a
    state dict's floating tensors."""
    if isinstance(weights, torch.nn.Module):
        return [(k, p.detach()) for k, p in weights.named_parameters()]
    return [(k, v) for k, v in weights.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def nonfinite_parameter_count(weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Number of NaN/inf values per tensor name, only for tensors that have any (empty: all finite)."""
    out: dict[str, int] = {}
    for name, t in _tensors(weights):
        if t.is_floating_point():
            n = int((~torch.isfinite(t)).sum().item())
            if n:
                out[name] = n
    return out


def check_finite_weights(weights: torch.nn.Module | Mapping[str, torch.Tensor],
                         source: str | os.PathLike) -> None:
    """Raise one line naming `source`, the count and the first bad tensor when any weight is nan/inf."""
    bad = nonfinite_parameter_count(weights)
    if bad:
        first = next(iter(bad))
        raise CheckpointError(
            f"{source}: {sum(bad.values())} non-finite (nan/inf) weight values in {len(bad)} tensor(s), "
            f"first {first!r}; the checkpoint is unusable (train diverged before it was written)"
        )
