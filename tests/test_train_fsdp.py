"""FSDP2 (`strategy = "fsdp"`) on CPU with 2 gloo ranks: one step equals one process on the same
global batch (loss, grad norm), a short run's losses equal the single-process run's, checkpoints are
full open_clip state dicts, and a save/resume round trip continues to the same losses.
Each train() call in a worker inits and destroys its own process group, hence one port per call."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

from clipscale.io import read_jsonl
from tests.fixtures_train import tiny_config
from tests.test_train_distributed import GLOBAL_BATCH, _fixed_batch, _free_port, _one_step


def _fsdp_step(rank: int, world: int, local_loss: bool = False) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import FSDPModule

    from clipscale.models import create_model
    from clipscale.train import train_step
    from clipscale.train.distributed import init_distributed, split_plain_params, unwrap, wrap_model
    from clipscale.train.loss import make_loss
    from clipscale.train.optim import make_optimizer

    env = init_distributed("cpu")
    torch.manual_seed(0)
    model = wrap_model(create_model("tiny-S0"), env, strategy="fsdp", grad_checkpointing=False,
                       compile=False, compile_backend="inductor")
    blocks = [*unwrap(model).visual.transformer.resblocks, *unwrap(model).transformer.resblocks]
    assert isinstance(model, FSDPModule) and all(isinstance(b, FSDPModule) for b in blocks)
    opt = split_plain_params(make_optimizer(unwrap(model), lr=1e-3, weight_decay=0.2, betas=(0.9, 0.98),
                                            eps=1e-6, device=env.device))
    images, texts = _fixed_batch()
    local = GLOBAL_BATCH // world
    rows = slice(rank * local, (rank + 1) * local)
    out = train_step(model, make_loss(local_loss=local_loss, rank=rank, world_size=world), opt,
                     torch.amp.GradScaler("cpu", enabled=False), images[rows], texts[rows], lr=1e-3,
                     precision="fp32", grad_clip=None)
    return {"loss": out.loss, "grad_norm": out.grad_norm, "logit_scale": out.logit_scale}


def _run_config(shards: Path, out: Path, **kw):
    """Six steps with gradient clipping on (grad norms here are ~35), so clipping of sharded
    gradients is compared with the single process too."""
    return tiny_config(shards, out, samples_seen=6 * GLOBAL_BATCH, batch_size=GLOBAL_BATCH, log_every=1,
                       checkpoint_points=[0.5, 1.0], threads=1, grad_clip=1.0, **kw)


class _Preempted(Exception):
    pass


def _worker(rank: int, world: int, ports: tuple[int, int, int], shards: str, out_dir: str) -> None:
    import clipscale.train.loop as loop
    from clipscale.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.save(_fsdp_step(rank, world), Path(out_dir) / f"fsdp_step{rank}.pt")
    # local loss: each rank's logit_scale gradient differs, so this checks its all-reduce hook
    torch.save(_fsdp_step(rank, world, local_loss=True), Path(out_dir) / f"fsdp_local{rank}.pt")
    out = Path(out_dir)
    train(_run_config(Path(shards), out / "full", strategy="fsdp"))

    save = loop._save

    def save_then_die(s, step, *, point):  # preempted right after the mid-run checkpoint
        save(s, step, point=point)
        if step == 3:
            raise _Preempted

    loop._save = save_then_die
    os.environ["MASTER_PORT"] = str(ports[1])  # each train() call inits (and ends) its process group
    with contextlib.suppress(_Preempted):
        train(_run_config(Path(shards), out / "resumed", strategy="fsdp"))
    loop._save = save
    os.environ["MASTER_PORT"] = str(ports[2])
    train(_run_config(Path(shards), out / "resumed", strategy="fsdp", resume="auto"))


@pytest.mark.slow
def test_fsdp_two_gloo_ranks_match_one_process(synth_train_shards: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from clipscale.models import create_model, load_checkpoint, read_checkpoint
    from clipscale.train import train

    ports = (_free_port(), _free_port(), _free_port())
    mp.spawn(_worker, args=(2, ports, str(synth_train_shards), str(tmp_path)), nprocs=2, join=True)
    single = _one_step(0, 1)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"fsdp_step{rank}.pt", weights_only=True)
        assert torch.allclose(got["loss"], single["loss"], rtol=0, atol=1e-5)
        assert torch.allclose(got["grad_norm"], single["grad_norm"], rtol=0, atol=1e-5)
        local = torch.load(tmp_path / f"fsdp_local{rank}.pt", weights_only=True)
        assert torch.allclose(local["grad_norm"], single["grad_norm"], rtol=0, atol=1e-5)

    train(_run_config(synth_train_shards, tmp_path / "single"))
    single_run = [r["loss"] for r in read_jsonl(tmp_path / "single" / "metrics.jsonl")]
    full = [r["loss"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    resumed = list(read_jsonl(tmp_path / "resumed" / "metrics.jsonl"))
    assert len(full) == 6 and max(abs(a - b) for a, b in zip(full, single_run, strict=True)) < 1e-5
    assert full[-1] < full[0]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed] == full  # resumed FSDP run == uninterrupted FSDP run

    ckpt = tmp_path / "full" / "checkpoints" / f"samples_{6 * GLOBAL_BATCH:012d}.pt"
    state = read_checkpoint(ckpt)["state_dict"]
    reference = create_model("tiny-S0").state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
    model = load_checkpoint(ckpt).model  # a plain open_clip module, strict load
    assert float(model.logit_scale.detach()) == pytest.approx(float(state["logit_scale"]))
