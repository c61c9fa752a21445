"""Training numbers that matter on GPUs, checked on CPU (issue 13): MFU per device, the stop flag's
host sync only every few steps, ranks waiting for rank 0's eval outside the training collectives,
the local loss on by default with the global loss's gradients, the lr of the first and last step,
stream-mode run ids, and SigLIP / CoCa models that train."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from clipscale.io import read_jsonl
from tests.fixtures_train import tiny_config
from tests.test_train_distributed import GLOBAL_BATCH, _free_port, _one_step

# ---------------------------------------------------------------- MFU, lr schedule, config default


def test_mfu_divides_by_the_peak_of_all_devices() -> None:
    from clipscale.train.metrics import mfu

    one = mfu(2.0, 1000.0, 100.0, world_size=1)
    assert one == pytest.approx(6e9 * 2.0 * 1000.0 / 100e12)
    assert mfu(2.0, 1000.0, 100.0, world_size=4) == pytest.approx(one / 4)
    assert mfu(2.0, 1000.0, None, world_size=4) is None


def test_first_and_last_step_train_at_nonzero_lr() -> None:
    from clipscale.train.optim import learning_rate, step_lr

    batch, steps = 100, 10
    kw = {"base_lr": 1.0, "total": batch * steps, "cooldown": 0.2}
    for schedule in ("cosine", "const-cooldown"):
        lrs = [step_lr(i, batch_size=batch, warmup=200, schedule=schedule, **kw) for i in range(steps)]
        assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)  # warmup: this step's samples
        assert lrs[-1] > 0  # the last step trains
        # after warmup: the curve at the samples seen before the step
        assert lrs[-1] == learning_rate(900, warmup=200, schedule=schedule, **kw)
        assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    no_warmup = [step_lr(i, batch_size=batch, warmup=0, schedule="cosine", **kw) for i in range(steps)]
    assert no_warmup[0] == 1.0 and no_warmup[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_local_loss_is_the_default() -> None:
    from clipscale.train import TrainConfig

    assert TrainConfig(train_data="x.tar").local_loss is True


# ---------------------------------------------------------------- stop flag: synced every K steps


def test_stop_flag_is_synced_only_every_k_steps(synth_train_shards: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """25 steps, logging only at the end: the all-rank check of the stop flag runs at steps 10, 20
    and 25, not after every step."""
    from clipscale.train import loop, train

    steps_done, checked_at = [0], []
    real_step, real_max = loop.train_step, loop.max_over_ranks

    def counting_step(*args, **kwargs):
        steps_done[0] += 1
        return real_step(*args, **kwargs)

    def counting_max(value, env):
        checked_at.append(steps_done[0])
        return real_max(value, env)

    monkeypatch.setattr(loop, "train_step", counting_step)
    monkeypatch.setattr(loop, "max_over_ranks", counting_max)
    train(tiny_config(synth_train_shards, tmp_path / "run", samples_seen=25 * 16, batch_size=16,
                      log_every=1000, checkpoint_points=[1.0]))
    assert loop.STOP_CHECK_EVERY == 10
    assert checked_at == [10, 20, 25]


# ---------------------------------------------------------------- 2 gloo ranks


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)


def _stop_worker(rank: int, world: int, ports: tuple[int, int], shards: str, out_dir: str) -> None:
    """One local-loss step; then a run in which only rank 1 gets SIGTERM (after step 2)."""
    import clipscale.train.loop as loop
    from clipscale.train import train

    out = Path(out_dir)
    _env(rank, world, ports[0])
    torch.save(_one_step(rank, world, local_loss=True), out / f"local_rank{rank}.pt")
    torch.distributed.destroy_process_group()

    os.environ["MASTER_PORT"] = str(ports[1])
    loop.STOP_CHECK_EVERY = 4
    real_step, done = loop.train_step, [0]

    def step_then_signal(*args, **kwargs):
        result = real_step(*args, **kwargs)
        done[0] += 1
        if rank == 1 and done[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    loop.train_step = step_then_signal
    cfg = tiny_config(Path(shards), out / "stopped", samples_seen=8 * GLOBAL_BATCH, batch_size=GLOBAL_BATCH,
                      log_every=100, checkpoint_points=[1.0], threads=1, peak_tflops=1.0)
    summary = train(cfg)
    (out / f"summary_rank{rank}.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_two_ranks_local_loss_gradients_stop_together_and_mfu_per_device(synth_train_shards: Path,
                                                                         tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from clipscale.models import read_checkpoint

    mp.spawn(_stop_worker, args=(2, (_free_port(), _free_port()), str(synth_train_shards), str(tmp_path)),
             nprocs=2, join=True)
    single = _one_step(0, 1)  # one process, the whole batch
    ranks = [torch.load(tmp_path / f"local_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for got in ranks:  # DDP-averaged gradients of the local loss == the global loss's gradients
        assert torch.allclose(got["grads"], single["grads"], rtol=0, atol=1e-5)
        assert torch.allclose(got["grad_norm"], single["grad_norm"], rtol=0, atol=1e-5)
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single["loss"], rtol=0, atol=1e-5)

    summaries = [json.loads((tmp_path / f"summary_rank{r}.json").read_text()) for r in (0, 1)]
    assert all((s["state"], s["signal"], s["steps"]) == ("interrupted", "SIGTERM", 4) for s in summaries)
    latest = read_checkpoint(tmp_path / "stopped" / "checkpoints" / "latest.pt")
    assert latest["clipscale"]["step"] == 4
    records = list(read_jsonl(tmp_path / "stopped" / "metrics.jsonl"))
    assert [r["step"] for r in records] == [4]  # logged when stopping (log_every is 100)
    # global samples/s over 2 devices' peak (1 TFLOP/s each)
    rate = records[0]["samples_per_s"]
    assert records[0]["mfu"] == pytest.approx(6e9 * summaries[0]["gmacs"] * rate / 2e12)


def _slow_eval_worker(rank: int, world: int, port: int, shards: str, out_dir: str) -> None:
    """Training process group timeout 4 s; rank 0's eval hook takes 7 s at the mid-run checkpoint
    point (step 2 of 4), after which the ranks meet in the next step's all-reduce."""
    import torch.distributed as dist

    import clipscale.train.loop as loop
    from clipscale.train import train

    _env(rank, world, port)
    dist.init_process_group("gloo", timeout=timedelta(seconds=4))

    def slow_eval(checkpoint, **kwargs):
        if checkpoint.name == f"samples_{2 * GLOBAL_BATCH:012d}.pt":
            time.sleep(7)
        with open(Path(out_dir) / "evaluated.txt", "a") as f:
            f.write(checkpoint.name + "\n")

    loop.run_eval_hook = slow_eval
    cfg = tiny_config(Path(shards), Path(out_dir) / "run", samples_seen=4 * GLOBAL_BATCH,
                      batch_size=GLOBAL_BATCH, log_every=1, checkpoint_points=[0.5], threads=1,
                      eval_suite="synth")  # a real suite: train checks it up front; the hook above runs
    summary = train(cfg)
    (Path(out_dir) / f"summary_rank{rank}.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_ranks_wait_for_a_slow_eval_outside_the_training_collectives(synth_train_shards: Path,
                                                                      tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_slow_eval_worker, args=(2, _free_port(), str(synth_train_shards), str(tmp_path)), nprocs=2,
             join=True)
    evaluated = (tmp_path / "evaluated.txt").read_text().split()
    assert evaluated == [f"samples_{n * GLOBAL_BATCH:012d}.pt" for n in (2, 4)]  # mid-run, then final
    for r in (0, 1):
        summary = json.loads((tmp_path / f"summary_rank{r}.json").read_text())
        assert (summary["state"], summary["steps"]) == ("finished", 4)


# ---------------------------------------------------------------- stream-mode run ids


STUDY = """
[study]
name = "t"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[train]
batch_size = 64
lr = 1e-3
data_mode = "{mode}"
workers = {workers}

[executor]
gpus_per_run = {gpus}

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 4000
samples_seen = 2000
"""


def _run_id(tmp_path: Path, mode: str, workers: int, gpus: int) -> str:
    from clipscale.study.grid import plan
    from clipscale.study.spec import load_study
    from tests.study_fakes import fake_flops

    path = tmp_path / f"{mode}-{workers}-{gpus}.toml"
    path.write_text(STUDY.format(mode=mode, workers=workers, gpus=gpus))
    (run,) = plan(load_study(path), flops=fake_flops)
    return run.run_id


def test_stream_mode_run_ids_depend_on_workers_and_world_size(tmp_path: Path) -> None:
    # index mode: batches are a pure function of (seed, step): workers and ranks change nothing
    assert len({_run_id(tmp_path, "index", w, g) for w in (0, 1, 4) for g in (0, 1, 2)}) == 1
    stream = {(w, g): _run_id(tmp_path, "stream", w, g) for w in (0, 1, 4) for g in (0, 1, 2)}
    assert stream[0, 0] == stream[1, 1]  # 0 workers streams like 1, 0 GPUs per run is one rank
    assert len({stream[w, g] for w in (1, 4) for g in (1, 2)}) == 4


# ---------------------------------------------------------------- SigLIP and CoCa


TINY_VISION = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 32}
TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1}
TINY_CONFIGS = {
    "test-tiny-sig": {"embed_dim": 32, "init_logit_bias": -10.0, "init_logit_scale": math.log(10),
                      "vision_cfg": TINY_VISION, "text_cfg": TINY_TEXT},
    "test-tiny-coca": {
        "embed_dim": 32, "custom_text": True,
        "vision_cfg": {**TINY_VISION, "attentional_pool": True, "attn_pooler_heads": 1,
                       "output_tokens": True},
        "text_cfg": {**TINY_TEXT, "embed_cls": True, "output_tokens": True},
        "multimodal_cfg": {**TINY_TEXT, "attn_pooler_heads": 1},
    },
}


@pytest.fixture(scope="module")
def tiny_open_clip_models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Tiny SigLIP-style (sigmoid loss, learnt logit bias) and CoCa configs, registered in open_clip."""
    import open_clip

    from clipscale.models import registry

    folder = tmp_path_factory.mktemp("configs")
    for name, cfg in TINY_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(folder / f"{name}.json")
    registry._open_clip_names.cache_clear()
    return list(TINY_CONFIGS)


@pytest.mark.parametrize("model", ["test-tiny-sig", "test-tiny-coca"])
def test_siglip_and_coca_models_train(model: str, tiny_open_clip_models: list[str], synth_train_shards: Path,
                                      tmp_path: Path) -> None:
    from clipscale.models import create_model, load_checkpoint
    from clipscale.train import train
    from clipscale.train.loss import loss_kind, make_loss

    cfg = TINY_CONFIGS[model]
    expected = {"test-tiny-sig": "SigLipLoss", "test-tiny-coca": "CoCaLoss"}[model]
    assert type(make_loss(local_loss=True, rank=0, world_size=1, model_cfg=cfg)).__name__ == expected
    assert loss_kind(cfg) in ("siglip", "coca")
    summary = train(tiny_config(synth_train_shards, tmp_path / "run", model=model, samples_seen=4 * 16,
                                batch_size=16, lr=1e-3, warmup=0, log_every=1, checkpoint_points=[1.0]))
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert summary["state"] == "finished" and len(losses) == 4 and all(math.isfinite(x) for x in losses)
    torch.manual_seed(0)  # the run's initial weights (train seeds 0 before building the model)
    start = create_model(model).state_dict()
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "samples_000000000064.pt").model.state_dict()
    # the model-specific parts learn: SigLIP's logit bias, CoCa's caption decoder
    key = "logit_bias" if model == "test-tiny-sig" else "text_decoder.resblocks.0.mlp.c_fc.weight"
    assert not torch.equal(start[key], trained[key])


def test_coca_weights_never_keep_uninitialised_memory(tiny_open_clip_models: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip leaves CoCa's decoder projection as torch.empty: with memory that happens to hold
    NaN the run diverged at step 1 (seen once in a full-suite run). Poison torch.empty to make that
    memory NaN every time; every parameter must still come out initialised."""
    from clipscale.models import create_model

    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)
    model = create_model("test-tiny-coca")
    assert [k for k, p in model.named_parameters() if not torch.isfinite(p).all()] == []
