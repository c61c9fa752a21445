"""DDP on CPU with 2 gloo ranks equals one process on the same global batch (loss, grad norm,
every gradient, and a short training run's loss sequence)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from clipscale.io import read_jsonl
from tests.fixtures_train import tiny_config

GLOBAL_BATCH = 16


def _fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    texts = torch.randint(3, 100, (GLOBAL_BATCH, 32), generator=g)
    return images, texts


def _one_step(rank: int, world: int, local_loss: bool = False) -> dict[str, torch.Tensor]:
    """One real train_step on this rank's slice of the fixed global batch."""
    from clipscale.models import create_model
    from clipscale.train import train_step
    from clipscale.train.distributed import init_distributed, unwrap, wrap_model
    from clipscale.train.loss import make_loss
    from clipscale.train.optim import make_optimizer

    env = init_distributed("cpu")
    torch.manual_seed(0)
    model = wrap_model(create_model("tiny-S0"), env, strategy="ddp", grad_checkpointing=False, compile=False,
                       compile_backend="inductor")
    opt = make_optimizer(unwrap(model), lr=1e-3, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6,
                         device=env.device)
    images, texts = _fixed_batch()
    local = GLOBAL_BATCH // world
    rows = slice(rank * local, (rank + 1) * local)
    out = train_step(model, make_loss(local_loss=local_loss, rank=rank, world_size=world), opt,
                     torch.amp.GradScaler("cpu", enabled=False), images[rows], texts[rows], lr=1e-3,
                     precision="fp32", grad_clip=None)
    grads = torch.cat([p.grad.flatten() for p in unwrap(model).parameters()])  # DDP-averaged on each rank
    return {"loss": out.loss, "grad_norm": out.grad_norm, "grads": grads}


def _worker(rank: int, world: int, port: int, shards: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    result = _one_step(rank, world)
    torch.save(result, Path(out_dir) / f"step_rank{rank}.pt")
    from clipscale.train import train

    train(_run_config(Path(shards), Path(out_dir) / "ddp_run"))


def _run_config(shards: Path, out: Path):
    return tiny_config(shards, out, samples_seen=4 * GLOBAL_BATCH, batch_size=GLOBAL_BATCH, log_every=1,
                       checkpoint_points=[1.0], threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(synth_train_shards: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from clipscale.train import train

    mp.spawn(_worker, args=(2, _free_port(), str(synth_train_shards), str(tmp_path)), nprocs=2, join=True)
    single = _one_step(0, 1)
    for rank in (0, 1):
        ddp = torch.load(tmp_path / f"step_rank{rank}.pt", weights_only=True)
        assert torch.allclose(ddp["loss"], single["loss"], rtol=0, atol=1e-5)
        assert torch.allclose(ddp["grad_norm"], single["grad_norm"], rtol=0, atol=1e-5)
        assert torch.allclose(ddp["grads"], single["grads"], rtol=0, atol=1e-5)

    train(_run_config(synth_train_shards, tmp_path / "single_run"))
    ddp_run = list(read_jsonl(tmp_path / "ddp_run" / "metrics.jsonl"))
    single_run = list(read_jsonl(tmp_path / "single_run" / "metrics.jsonl"))
    assert [r["step"] for r in ddp_run] == [1, 2, 3, 4]
    for a, b in zip(ddp_run, single_run, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
    assert (tmp_path / "ddp_run" / "checkpoints" / "samples_000000000064.pt").is_file()
