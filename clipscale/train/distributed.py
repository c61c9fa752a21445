"""Everything distributed lives here: torchrun's environment, DDP wrapping, torch.compile.

Model code stays plain open_clip; this module is the one place that wraps it, so a checkpoint,
an eval or a test can always get the bare module back with `unwrap`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from clipscale.errors import ClipscaleError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str, local_rank: int) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ClipscaleError("train config field 'device': 'cuda' requested but no CUDA GPU is available")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_pref: str) -> DistEnv:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; init NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, env: DistEnv, *, strategy: str, grad_checkpointing: bool,
               compile: bool, compile_backend: str) -> torch.nn.Module:
    """Grad checkpointing, then DDP (only when world_size > 1), then torch.compile.

    FSDP is not offered yet: torch's fully_shard rejects open_clip's scalar `logit_scale` parameter,
    and working around it (ignored params + a manual all-reduce) needs a GPU test this project lacks.
    """
    if strategy != "ddp":
        raise ClipscaleError(f"train config field 'strategy': {strategy!r} is not supported; use 'ddp'")
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if env.distributed:
        ids = [env.local_rank] if env.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if compile:
        model = torch.compile(model, backend=compile_backend)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare open_clip module under torch.compile and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) \
        else model


def all_reduce_sum(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item())


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on one (stop requests must stop all ranks at one step)."""
    return all_reduce_sum(1.0 if flag else 0.0, env) > 0 if env.distributed else flag


def check_batch(batch_size: int, env: DistEnv) -> int:
    if batch_size % env.world_size:
        raise ClipscaleError(f"train config field 'batch_size': {batch_size} is not divisible by the "
                             f"world size {env.world_size}")
    return batch_size // env.world_size
