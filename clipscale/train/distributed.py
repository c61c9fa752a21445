"""Everything distributed lives here: torchrun's environment, DDP/FSDP wrapping, torch.compile.

Model code stays plain open_clip; this module is the one place that wraps it, so a checkpoint,
an eval or a test can always get the bare module back with `unwrap`.

FSDP (`strategy = "fsdp"`) is torch's FSDP2 `fully_shard`, applied to every transformer block of
both towers and then to the root. FSDP2 rejects 0-dim parameters (open_clip's `logit_scale`), so
those are passed as `ignored_params`: they stay replicated plain tensors, and a post-accumulate-grad
hook averages their gradient over ranks (what FSDP's reduce-scatter does for the rest). Because
sharded (DTensor) and plain parameters cannot share one fused AdamW call, `split_plain_params`
puts them in separate groups; `grad_norm` sums squared norms of the local shards over ranks.
Checkpoints stay full open_clip state dicts: `checkpoint_model`/`optimizer_state` gather them
(torch.distributed.checkpoint.state_dict, full_state_dict + cpu_offload) on every rank and rank 0
writes; resume loads the full weights into the bare model before sharding and the full optimizer
state with `set_optimizer_state_dict`. Tested on CPU with 2 gloo ranks (tests/test_train_fsdp.py);
with world size 1 "fsdp" runs unsharded, like "ddp".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from clipscale.errors import ClipscaleError

# How long the other ranks wait for rank 0's checkpoint writes and evaluation (`wait_for_main`).
MAIN_WORK_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    wait_group: Any = field(default=None, compare=False)  # gloo group for `wait_for_main`

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
    wait_group = None
    if world > 1:
        # imported before any process group exists: its collectives default to `group.WORLD` as
        # evaluated at import, which would otherwise be this group, stale once it is destroyed and
        # a later train() in the same process creates another
        import torch.distributed.nn  # noqa: F401
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        wait_group = dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device, wait_group=wait_group)


def wait_for_main(env: DistEnv) -> None:
    """Hold every rank until rank 0 has written its checkpoints and run the eval hook.

    Without this the other ranks would go on into the next step's collective and wait there, on
    the training process group's timeout (NCCL's watchdog: 10 minutes by default), for an eval that
    may take longer. The wait is a CPU barrier on a separate gloo group with a long timeout, so no
    NCCL work is pending meanwhile."""
    if env.distributed:
        dist.barrier(group=env.wait_group)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, env: DistEnv, *, strategy: str, grad_checkpointing: bool,
               compile: bool, compile_backend: str) -> torch.nn.Module:
    """Grad checkpointing, then DDP or FSDP (only when world_size > 1), then torch.compile."""
    if strategy not in ("ddp", "fsdp"):
        raise ClipscaleError(f"train config field 'strategy': expected ddp or fsdp, got {strategy!r}")
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if env.distributed and strategy == "fsdp":
        model = _fully_shard(model, env)
    elif env.distributed:
        ids = [env.local_rank] if env.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if compile:
        model = torch.compile(model, backend=compile_backend)
    return model


def _fully_shard(model: torch.nn.Module, env: DistEnv) -> torch.nn.Module:
    """FSDP2 per residual block of each tower, then the root (embeddings, norms, projections)."""
    from torch.distributed.fsdp import fully_shard

    scalars = {p for p in model.parameters() if p.ndim == 0}
    for tower in (getattr(model, "visual", None), model):
        blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
        for block in blocks or ():
            fully_shard(block)
    fully_shard(model, ignored_params=scalars or None)
    world = env.world_size

    def average(param: torch.Tensor) -> None:
        dist.all_reduce(param.grad)
        param.grad.div_(world)

    for p in scalars:
        p.register_post_accumulate_grad_hook(average)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)


def split_plain_params(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer with each group split into sharded (DTensor) and plain parameters:
    a fused/foreach step cannot mix the two. Unchanged when nothing is sharded."""
    from torch.distributed.tensor import DTensor

    groups = []
    for group in optimizer.param_groups:
        for sharded in (True, False):
            params = [p for p in group["params"] if isinstance(p, DTensor) == sharded]
            if params:
                groups.append({**group, "params": params})
    if optimizer.state:
        raise ValueError("split_plain_params must run before the first optimizer step")
    optimizer.param_groups[:] = groups  # same parameters and hyper-parameters, finer groups
    return optimizer


def grad_norm(params: Iterable[torch.Tensor], clip: float | None) -> torch.Tensor:
    """Global L2 norm of the gradients (clipped to `clip` if given), sharded or not."""
    from torch.distributed.tensor import DTensor

    with_grad = [p for p in params if p.grad is not None]
    grads = [p.grad for p in with_grad]
    sharded = [g.to_local() for g in grads if isinstance(g, DTensor)]
    if not sharded:
        if clip is not None:
            return torch.nn.utils.clip_grad_norm_(with_grad, clip).detach()
        return torch.nn.utils.get_total_norm(grads)
    plain = [g for g in grads if not isinstance(g, DTensor)]
    square = torch.nn.utils.get_total_norm(sharded).pow(2)
    dist.all_reduce(square)  # shards partition the parameters: squared norms add up
    if plain:
        square = square + torch.nn.utils.get_total_norm(plain).pow(2)
    norm = square.sqrt()
    if clip is not None:
        coef = torch.clamp(clip / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(sharded + plain, coef)
    return norm


def checkpoint_model(model: torch.nn.Module) -> torch.nn.Module:
    """What `save_checkpoint` reads the weights from: the bare module, or under FSDP a view whose
    state_dict() is the full open_clip state dict (collective: call on every rank)."""
    if not is_sharded(model):
        return unwrap(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True,
                                                                        cpu_offload=True))
    return _FullState(full)


class _FullState(torch.nn.Module):
    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._full = state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._full


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict(), or under FSDP the full (unsharded, parameter-name keyed) state
    gathered to rank 0's CPU (collective: call on every rank)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(unwrap(model), optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         *, source: str) -> None:
    """Inverse of `optimizer_state`; a checkpoint of the other strategy is refused in one line."""
    full_format = all(isinstance(k, str) for k in state.get("state", {}))
    if not is_sharded(model):
        if state.get("state") and full_format:
            raise ClipscaleError(f"{source}: optimizer state was saved under FSDP; resume with "
                                 "strategy = 'fsdp' on more than one rank")
        optimizer.load_state_dict(state)
        return
    if state.get("state") and not full_format:
        raise ClipscaleError(f"{source}: optimizer state was saved without FSDP; "
                             "resume with strategy = 'ddp'")
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(unwrap(model), optimizer, state, options=StateDictOptions(full_state_dict=True))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare open_clip module under torch.compile and DDP wrappers (FSDP2 shards in place)."""
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


def max_over_ranks(value: int, env: DistEnv) -> int:
    """The largest `value` of all ranks, on every rank (which stop signal, if any, one rank got)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def check_batch(batch_size: int, env: DistEnv) -> int:
    if batch_size % env.world_size:
        raise ClipscaleError(f"train config field 'batch_size': {batch_size} is not divisible by the "
                             f"world size {env.world_size}")
    return batch_size // env.world_size
