"""AdamW with open_clip's weight-decay split, and learning rate as a function of samples seen.

The schedule is a pure function of samples seen (not steps or epochs), so runs with different batch
sizes or resumed mid-way follow the same curve, as the paper's "samples seen" budgets require.
"""

from __future__ import annotations

import math

import torch


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """open_clip's rule: no weight decay on gains/biases (ndim < 2), norms, and the logit scale."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (rest if no_decay(name, p) else decay).append(p)
    return [{"params": rest, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                   eps: float, device: torch.device) -> torch.optim.AdamW:
    """Fused AdamW (one kernel over all parameters) on CUDA and CPU: on CPU it measured 3.5x faster
    than foreach and 7x faster than the per-parameter loop torch defaults to there (/work/notes)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=fused or None, foreach=None if fused else True)


def step_lr(step: int, *, batch_size: int, base_lr: float, warmup: int, total: int, schedule: str,
            cooldown: float) -> float:
    """lr of the optimizer step that trains on batch `step` (0-based), as open_clip_train's schedule:
    the warmup ramp counts this step's samples (the first step trains at base_lr * batch / warmup,
    not 0) and the decay counts the samples seen before it (the last step trains at lr > 0, not 0).
    """
    before = step * batch_size
    if warmup > 0 and before < warmup:
        return base_lr * min(before + batch_size, warmup) / warmup
    return learning_rate(before, base_lr=base_lr, warmup=warmup, total=total, schedule=schedule,
                         cooldown=cooldown)


def learning_rate(samples_done: int, *, base_lr: float, warmup: int, total: int, schedule: str,
                  cooldown: float) -> float:
    """The schedule's curve at `samples_done` samples seen (`step_lr` says which point a step uses).

    Linear warmup to base_lr over `warmup` samples; then "cosine" decays to zero at `total`, or
    "const-cooldown" holds base_lr and decays linearly to zero over the last `cooldown` fraction.
    """
    if warmup > 0 and samples_done <= warmup:
        return base_lr * samples_done / warmup
    if schedule == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, (samples_done - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress)) * base_lr
    start = max(warmup, total - round(cooldown * total))
    if samples_done <= start:
        return base_lr
    return base_lr * max(0.0, (total - samples_done) / max(1, total - start))
