"""Set-up of one training run: everything `loop.py` needs, built once from a TrainConfig.

Order matters and is kept in one function: data (fails fast on bad shards) -> resume checkpoint ->
seed -> model -> resume weights -> wrap (DDP/FSDP, compile) -> optimizer -> resume optimizer.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipscale.data.loader import SampleReader, StepBatches, StepSampler, build_sources
from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_json, remove_stale_tmp
from clipscale.train import checkpointing as ckpt
from clipscale.train.config import TrainConfig, check_trackers
from clipscale.train.distributed import (
    DistEnv,
    check_batch,
    init_distributed,
    load_optimizer_state,
    split_plain_params,
    unwrap,
    wrap_model,
)
from clipscale.train.loss import make_loss
from clipscale.train.optim import make_optimizer

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default normalisation
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Session:
    config: TrainConfig
    env: DistEnv
    run_dir: Path
    model: torch.nn.Module  # wrapped (DDP/compiled)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: torch.nn.Module
    dataset: torch.utils.data.Dataset  # StepBatches (index mode) or StreamBatches (stream mode)
    checkpointer: ckpt.Checkpointer
    mean: torch.Tensor
    std: torch.Tensor
    gmacs: float
    unique_samples: int | None  # None: stream mode without data_size or stats files
    index_skipped: dict[str, int]
    start_step: int = 0
    decode_skipped: int = 0  # this rank's replaced samples so far (restored on resume)
    end_step: int = 0
    stop_signal: int | None = None
    started: float = field(default_factory=time.time)


def resolve_lr(config: TrainConfig) -> float:
    if config.lr is not None:
        return config.lr
    from clipscale.models import LADDER

    return LADDER[config.model].lr if config.model in LADDER else 5e-4


def forward_gmacs(model_name: str) -> float:
    """Forward GMACs per sample from models.count_flops (the paper's compute unit)."""
    try:
        from clipscale.models.flops import count_flops
    except ImportError:  # foundation FLOPs module not present: count with torch's counter
        return _fallback_gmacs(model_name)
    return float(count_flops(model_name).gmacs)


def _fallback_gmacs(model_name: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from clipscale.models import context_length, create_model, image_size

    model = create_model(model_name)
    size, ctx = image_size(model_name), context_length(model_name)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size), torch.zeros(1, ctx, dtype=torch.long))
    return counter.get_total_flops() / 2e9


def _set_threads(config: TrainConfig) -> None:
    """Default: this rank's share of the CPUs allocated to it, minus its decode workers (a spinning
    OpenMP thread that shares a core with a worker slows tiny CPU steps by 10x or more)."""
    from clipscale.train.threads import threads_per_rank

    torch.set_num_threads(config.threads if config.threads is not None
                          else threads_per_rank(workers=config.workers))


def _write_run_files(run_dir: Path, config: TrainConfig, model_cfg: dict[str, Any]) -> None:
    """config.json is exactly the resolved TrainConfig: `load_train_config` reads it back as is."""
    from clipscale.models import write_open_clip_config

    atomic_write_json(run_dir / "config.json", config.to_dict())
    write_open_clip_config(run_dir / "open_clip_config", config.model, model_cfg)


def _remove_stale_tmp(run_dir: Path) -> None:
    """Temporaries of a killed earlier writer (`.NAME.*.tmp`): the run's own writers start after this,
    on this rank only, so none can be active (a study also holds the run's lock)."""
    for directory in (run_dir, run_dir / "checkpoints", run_dir / "open_clip_config"):
        remove_stale_tmp(directory)


def _check_eval_suite(config: TrainConfig) -> None:
    try:
        from clipscale.evals.suite import check_suite
    except ImportError:  # the eval stage is optional for training (evalhook.py says so per checkpoint)
        return
    try:
        check_suite(config.eval_suite, root=config.eval_data_root)
    except ClipscaleError as exc:
        raise ClipscaleError(f"train config field 'eval_suite': {exc}") from None


def build_session(config: TrainConfig) -> Session:
    from clipscale.models import create_model, get_tokenizer, image_size, model_config
    from clipscale.models.registry import register_model_configs

    check_trackers(config.report_to)  # before anything is written: no half-made run directory
    env = init_distributed(config.device)
    check_batch(config.batch_size, env)
    if config.precision == "amp" and env.device.type != "cuda":
        raise ClipscaleError("train config field 'precision': 'amp' (fp16) needs a CUDA device; "
                             "use fp32 on CPU")
    _set_threads(config)
    register_model_configs(config.model_configs)  # --model-config / model_configs = [...]
    if config.eval_suite:  # a bad suite (templates, class names, paths) fails now, not after training
        _check_eval_suite(config)
    model_cfg = model_config(config.model)  # unknown model -> ClipscaleError listing valid names
    config = dataclasses.replace(config, lr=resolve_lr(config))
    run_dir = Path(config.output_dir)
    resume_path = ckpt.find_resume(config.resume, run_dir)
    payload = ckpt.load_resume(resume_path, config.to_dict()) if resume_path else None
    gmacs = forward_gmacs(config.model)

    tokenizer = get_tokenizer(config.model)
    dataset, unique_samples, index_skipped = _build_data(config, env, tokenizer, image_size(config.model))

    if env.is_main:  # only once the data and any resume checkpoint are known to be usable
        run_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(run_dir)
        _write_run_files(run_dir, config, model_cfg)
    torch.manual_seed(config.seed)
    model = create_model(config.model)
    if payload is not None:
        model.load_state_dict({k.removeprefix("module."): v for k, v in payload["state_dict"].items()})
    model = wrap_model(model.to(env.device), env, strategy=config.strategy,
                       grad_checkpointing=config.grad_checkpointing, compile=config.compile,
                       compile_backend=config.compile_backend)
    optimizer = make_optimizer(unwrap(model), lr=config.lr, weight_decay=config.weight_decay,
                               betas=(config.beta1, config.beta2), eps=config.eps, device=env.device)
    optimizer = split_plain_params(optimizer)  # no-op unless FSDP sharded some parameters
    scaler = torch.amp.GradScaler(env.device.type, enabled=config.precision == "amp")
    mean = torch.tensor(OPENAI_MEAN, device=env.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(OPENAI_STD, device=env.device).view(1, 3, 1, 1) * 255
    session = Session(
        config=config, env=env, run_dir=run_dir, model=model, optimizer=optimizer, scaler=scaler,
        loss_fn=make_loss(local_loss=config.local_loss, rank=env.rank, world_size=env.world_size,
                          model_cfg=model_cfg),
        dataset=dataset, mean=mean, std=std, gmacs=gmacs,
        checkpointer=ckpt.Checkpointer(run_dir, model_name=config.model, model_cfg=model_cfg,
                                       tokenizer=tokenizer, gmacs=gmacs, config=config.to_dict(),
                                       is_main=env.is_main),
        unique_samples=unique_samples, index_skipped=index_skipped,
    )
    if payload is not None:
        _restore(session, payload)
    return session


def _build_data(config: TrainConfig, env: DistEnv, tokenizer: Any, size: int
                ) -> tuple[torch.utils.data.Dataset, int | None, dict[str, int]]:
    """(dataset, unique samples if known, index-time skip counts) for the config's data_mode."""
    if config.data_mode == "stream":
        from clipscale.data.stream import StreamBatches, plan_shards

        assert isinstance(config.train_data, str)  # TrainConfig refuses weighted sources in stream mode
        plan = plan_shards(config.train_data, config.data_size)
        dataset = StreamBatches(plan, image_size=size, tokenizer=tokenizer, batch_size=config.batch_size,
                                seed=config.seed, rank=env.rank, world_size=env.world_size,
                                workers=config.workers, shuffle_buffer=config.shuffle_buffer,
                                augment=config.augment == "openclip")
        if env.is_main:
            for line in plan.warnings:
                sys.stderr.write(f"clipscale: warning: {line}\n")
        return dataset, plan.size, dict(plan.skipped)  # bad shards go into summary.json's "skipped"
    sources = build_sources(config.train_data, config.data_size)
    sampler = StepSampler([len(ix) for ix, _ in sources], [w for _, w in sources], config.batch_size,
                          config.seed)
    reader = SampleReader([ix for ix, _ in sources], size)
    index_skipped: dict[str, int] = {}
    for ix, _ in sources:
        for k, v in ix.skipped.items():
            index_skipped[k] = index_skipped.get(k, 0) + v
    dataset = StepBatches(sampler, reader, tokenizer, env.rank, env.world_size,
                          augment=config.augment == "openclip")
    return dataset, sum(len(ix) for ix, _ in sources), index_skipped


def _check_stream_resume(session: Session, payload: dict[str, Any]) -> None:
    """Stream-mode batches depend on world size, workers and buffer too: refuse to resume on others."""
    saved = {**payload["clipscale"].get("train_config", {}),
             "world_size": payload["clipscale"]["train_state"].get("world_size")}
    now = {**session.config.to_dict(), "world_size": session.env.world_size}
    for d in (saved, now):
        d["workers"] = max(1, d.get("workers") or 0)  # 0 (no worker processes) streams like 1
    for key in ("data_mode", "workers", "shuffle_buffer", "world_size"):
        if saved.get(key) is not None and saved[key] != now[key]:
            raise ClipscaleError(f"{session.config.resume}: cannot resume a stream-mode run with {key}="
                                 f"{now[key]!r}; the checkpoint has {key}={saved[key]!r}")


def _restore(session: Session, payload: dict[str, Any]) -> None:
    state = payload["clipscale"]["train_state"]
    saved_mode = payload["clipscale"].get("train_config", {}).get("data_mode", "index")
    if "stream" in (session.config.data_mode, saved_mode):
        _check_stream_resume(session, payload)
    load_optimizer_state(session.model, session.optimizer, payload["optimizer"],
                         source=str(session.config.resume))
    if "scaler" in state:
        session.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"], session.env.device)
    session.start_step = int(state["step"])
    # the saved count is the all-rank total; keep it on rank 0 so the all-reduced sum stays right
    session.decode_skipped = int(state.get("decode_skipped", 0)) if session.env.is_main else 0
