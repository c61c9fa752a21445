"""TrainConfig: every knob of a training run, validated once, loadable from TOML + `--key value`.

Standard library only (the CLI imports it for --help). Every validation error is one line that
names the field, so a bad study file or command line is fixed without reading a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipscale.confighelp import check_choice, doc_field, fields_of
from clipscale.errors import ClipscaleError
from clipscale.io import read_toml

SCHEDULES = ("cosine", "const-cooldown")
PRECISIONS = ("fp32", "bf16", "amp")
DEVICES = ("auto", "cpu", "cuda")
DATA_MODES = ("index", "stream")
STRATEGIES = ("ddp", "fsdp")  # under torchrun; see train/distributed.py
AUGMENTS = ("none", "openclip")  # openclip: open_clip's training crop (data/loader.py), from (seed, step)
REPORT_TO = ("tensorboard", "wandb")  # trackers metrics.jsonl is mirrored to (train/metrics.py)
DEFAULT_POINTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))


@dataclass
class TrainConfig:
    """One training run. Sizes are in samples (not epochs or steps), as in the paper."""

    model: str = doc_field("tiny-S0", help="model name: a ladder size or any open_clip architecture "
                           "(`clipscale models`)")
    model_configs: list[str] = doc_field(
        factory=list, help="open_clip model config JSONs to register first (custom architectures; name = "
        "file stem); flag --model-config FILE.json, repeatable")
    train_data: str | list[dict[str, Any]] = doc_field(
        "", help="training shards: 'dir/{00000..00009}.tar', a directory, or [{shards, weight}] mixtures")
    output_dir: str = doc_field("runs/train", help="run directory (config.json, metrics.jsonl, "
                                "checkpoints/); one holding a run of another config is refused: pick "
                                "another, or delete it to replace that run")
    data_size: int | None = doc_field(None, help="unique samples: the first N of the shards; none = all")
    data_mode: str = doc_field("index", choices=DATA_MODES, help="index: random access over a tar index "
                               "(up to ~1e8 samples); stream: sequential shards with a shuffle buffer "
                               "(LAION scale)")
    shuffle_buffer: int = doc_field(10_000, help="samples per stream-mode shuffle buffer (per rank and "
                                    "worker)")
    samples_seen: int = doc_field(10_000, help="total training samples (all ranks); rounded up to whole "
                                  "batches (a study plans the rounded value, with a warning)")
    batch_size: int = doc_field(128, help="global batch size (all ranks)")
    lr: float | None = doc_field(None, help="peak learning rate; none = the ladder size's suggested lr, "
                                 "else 5e-4 (open_clip's default)")
    warmup: int | None = doc_field(None, help="samples of linear warmup; none = 10% of samples_seen")
    schedule: str = doc_field("cosine", choices=SCHEDULES, help="learning-rate decay after warmup: cosine "
                              "to zero, or constant then a linear cooldown over the last `cooldown` fraction")
    cooldown: float = doc_field(0.2, help="fraction of samples_seen spent decaying to zero "
                                "(schedule const-cooldown)")
    weight_decay: float = doc_field(0.2, help="AdamW weight decay (not applied to gains, biases, norms "
                                    "and the logit scale)")
    beta1: float = doc_field(0.9, help="AdamW beta1")
    beta2: float = doc_field(0.98, help="AdamW beta2")
    eps: float = doc_field(1e-6, help="AdamW epsilon")
    grad_clip: float | None = doc_field(None, help="max global gradient norm; none = no clipping "
                                        "(open_clip's default)")
    precision: str = doc_field("fp32", choices=PRECISIONS, help="numeric precision: fp32, bf16 autocast, "
                               "or fp16 autocast with a loss scaler (amp)")
    grad_checkpointing: bool = doc_field(False, help="recompute activations in the backward pass "
                                         "(less memory, same result)")
    compile: bool = doc_field(False, help="torch.compile the model")
    compile_backend: str = doc_field("inductor", help="torch.compile backend (with compile = true)")
    local_loss: bool = doc_field(True, help="contrastive logits of local rows against all gathered "
                                 "features (true) or all against all (false); same gradient")
    strategy: str = doc_field("ddp", choices=STRATEGIES, help="multi-GPU wrapping under torchrun: "
                              "DistributedDataParallel, or FSDP2 sharding per block")
    seed: int = doc_field(0, help="seed of initialisation and data order")
    augment: str = doc_field("none", choices=AUGMENTS, help="training image augmentation: none (centre "
                             "crop) or openclip (RandomResizedCrop, scale (0.9, 1.0), drawn from (seed, "
                             "step))")
    checkpoint_points: list[float] = doc_field(
        factory=lambda: list(DEFAULT_POINTS), help="fractions of samples_seen at which to save a "
        "checkpoint (and evaluate); comma-separated on the command line")
    eval_suite: str | None = doc_field(None, help="evaluate each checkpoint on this suite (file or "
                                       "built-in name; docs/suites.md); none = no evaluation while training")
    eval_data_root: str | None = doc_field(None, help="where the eval suite's relative dataset paths "
                                           "resolve")
    device: str = doc_field("auto", choices=DEVICES, help="where to train; auto = cuda if available, "
                            "else cpu")
    workers: int = doc_field(1, help="data-loader worker processes (0 = decode in the training process)")
    threads: int | None = doc_field(None, help="torch intra-op threads; none = allocated CPUs / local "
                                    "ranks (minus workers on CPU; train/threads.py)")
    resume: str = doc_field("auto", help="auto: continue from checkpoints/latest.pt if present (a finished "
                            "run trains nothing more); none: start the same config over in output_dir; or a "
                            "checkpoint path")
    keep_latest: bool = doc_field(False, help="keep a finished run's checkpoints/latest.pt (never "
                                  "resumable once finished; removed by default)")
    log_every: int = doc_field(10, help="optimizer steps between metrics.jsonl records (and progress "
                               "lines when stderr is not a terminal)")
    report_to: list[str] = doc_field(factory=list, choices=REPORT_TO, help="also log metrics to these "
                                     "trackers; comma-separated on the command line; wandb runs offline "
                                     "unless WANDB_MODE is set")
    tensorboard: bool = doc_field(False, help="shorthand for adding tensorboard to report_to "
                                  "(TensorBoard events in RUN_DIR/tensorboard/)")
    progress: bool = doc_field(True, help="progress on stderr: a bar on a terminal, else one line per "
                               "log interval (samples/s, loss, ETA)")
    peak_tflops: float | None = doc_field(None, help="one accelerator's peak TFLOP/s for MFU; none = "
                                          "looked up from the GPU name")

    def __post_init__(self) -> None:
        _coerce_types(self)
        _check_ranges(self)
        if self.warmup is None:
            self.warmup = self.samples_seen // 10
        points = sorted({float(p) for p in self.checkpoint_points})
        if any(not 0.0 < p <= 1.0 for p in points):
            raise _err("checkpoint_points", f"expected fractions in (0, 1], got {self.checkpoint_points}")
        self.checkpoint_points = points
        trackers = [*self.report_to, *(["tensorboard"] if self.tensorboard else [])]
        self.report_to = [t for t in REPORT_TO if t in trackers]  # --tensorboard: report_to tensorboard
        if self.data_size is not None and self.data_size <= 0:
            raise _err("data_size", f"expected a positive integer or none, got {self.data_size}")
        self.train_data = _check_train_data(self.train_data)
        if self.data_mode == "stream" and not isinstance(self.train_data, str):
            raise _err("data_mode", "'stream' reads one shard spec; weighted train_data needs 'index'")

    @property
    def total_steps(self) -> int:
        return math.ceil(self.samples_seen / self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _err(name: str, msg: str) -> ClipscaleError:
    return ClipscaleError(f"train config field '{name}': {msg}")


def _coerce_types(cfg: TrainConfig) -> None:
    """Check each field against its annotation; ints are accepted where floats are expected."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        ok, coerced = _matches(value, hints[f.name])
        if not ok:
            raise _err(f.name, f"expected {_type_name(hints[f.name])}, got {value!r}")
        setattr(cfg, f.name, coerced)


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            ok, coerced = _matches(value, arg)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list | tuple):
            return False, value
        (item_tp,) = typing.get_args(tp)
        items = [_matches(v, item_tp) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check_ranges(cfg: TrainConfig) -> None:
    for name, f in fields_of(TrainConfig).items():  # the choices documented on each field
        values = getattr(cfg, name) if isinstance(getattr(cfg, name), list) else [getattr(cfg, name)]
        for value in values:
            error = check_choice(f"train config field '{name}'", f, value)
            if error:
                raise ClipscaleError(error)
    positive = ("samples_seen", "batch_size", "log_every", "shuffle_buffer")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise _err(name, f"expected a positive integer, got {getattr(cfg, name)}")
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise _err("lr", f"expected a positive number, got {cfg.lr}")
    if cfg.warmup is not None and not 0 <= cfg.warmup <= cfg.samples_seen:
        raise _err("warmup", f"expected 0 <= warmup <= samples_seen ({cfg.samples_seen}), got {cfg.warmup}")
    if not 0.0 < cfg.cooldown <= 1.0:
        raise _err("cooldown", f"expected a fraction in (0, 1], got {cfg.cooldown}")
    if cfg.weight_decay < 0:
        raise _err("weight_decay", f"expected >= 0, got {cfg.weight_decay}")
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1 and cfg.eps > 0):
        raise _err("beta1/beta2/eps", "expected betas in [0, 1) and eps > 0")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise _err("grad_clip", f"expected a positive number or none, got {cfg.grad_clip}")
    if cfg.workers < 0:
        raise _err("workers", f"expected >= 0, got {cfg.workers}")
    if cfg.threads is not None and cfg.threads <= 0:
        raise _err("threads", f"expected a positive integer or none, got {cfg.threads}")
    if not cfg.model:
        raise _err("model", "expected a model name (see `clipscale models`)")
    if not cfg.output_dir:
        raise _err("output_dir", "expected a directory path")


def _check_train_data(value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        if not value.strip():
            raise _err("train_data", "expected a shard spec such as 'data/{00000..00009}.tar'")
        return value
    if not value:
        raise _err("train_data", "expected at least one {shards, weight} entry")
    out = []
    for i, entry in enumerate(value):
        shards, weight = entry.get("shards"), entry.get("weight", 1.0)
        extra = set(entry) - {"shards", "weight"}
        if not isinstance(shards, str) or not shards or extra:
            raise _err("train_data", f"entry {i}: expected {{shards = '...', weight = w}}, got {entry}")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight > 0:
            raise _err("train_data", f"entry {i}: weight must be a positive number, got {weight!r}")
        out.append({"shards": shards, "weight": float(weight)})
    return out


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
# The package each tracker of report_to needs (wandb is an optional extra: pip install 'clipscale[wandb]').
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_trackers(report_to: list[str]) -> None:
    """Fail in one line, before any run directory is made, when a tracker's package is missing."""
    import importlib.util

    for tracker in report_to:
        package = TRACKER_PACKAGES[tracker]
        if importlib.util.find_spec(package) is None:
            raise _err("report_to", f"{tracker} asks for the '{package}' package, which is not installed "
                                    f"(pip install {package}), or drop it from report_to")


# Keys that may differ when resuming (`resume = "auto"` or a path): they change how a run is executed,
# observed or evaluated, never its weights. Every other field (lr, schedule, warmup, cooldown,
# optimizer settings, batch size, model, data, precision, loss options, compile, device, checkpoint
# points, ...) is the recipe: resuming with a different value would record a run that never happened.
# grad_checkpointing recomputes activations bit-identically; stream-mode resumes also pin `workers`
# (session.py), because there the worker count decides which samples form each batch.
RESUME_OPERATIONAL_KEYS: tuple[str, ...] = (
    "workers", "threads", "progress", "log_every", "tensorboard", "report_to", "peak_tflops",
    "eval_suite", "eval_data_root", "grad_checkpointing", "resume", "output_dir", "keep_latest",
    "model_configs",  # where the config file lies; the architecture itself is checked by the weights
)


def resume_allowed_keys() -> tuple[str, ...]:
    return RESUME_OPERATIONAL_KEYS


def recipe_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Recipe keys whose value in `now` (a resolved TrainConfig.to_dict()) differs from the one the
    checkpoint was trained with; keys a checkpoint predates are not compared."""
    return [k for k in FIELD_NAMES
            if k not in RESUME_OPERATIONAL_KEYS and k in saved and k in now and saved[k] != now[k]]


def parse_override(name: str, text: str) -> Any:
    """Turn a command-line string into the field's type: ints, floats, bools, none, comma lists."""
    if name not in FIELD_NAMES:
        flag = name.replace("_", "-")
        raise ClipscaleError(f"unknown train option --{flag}; valid: {', '.join(FIELD_NAMES)}")
    tp = typing.get_type_hints(TrainConfig)[name]
    low = text.strip().lower()
    union = typing.get_origin(tp) in (types.UnionType, typing.Union)
    args = typing.get_args(tp) if union else (tp,)
    if type(None) in args and low in ("none", "null", ""):
        return None
    for candidate in args:
        if candidate is bool and low in ("true", "false", "1", "0", "yes", "no"):
            return low in ("true", "1", "yes")
        if candidate is int:
            try:
                return int(low.replace("_", ""))
            except ValueError:
                try:  # allow 1e6 for sizes
                    as_float = float(low)
                except ValueError:
                    continue
                if as_float.is_integer():
                    return int(as_float)
        if candidate is float:
            try:
                return float(low)
            except ValueError:
                continue
        if typing.get_origin(candidate) is list and typing.get_args(candidate) == (str,):
            return [x.strip() for x in text.split(",") if x.strip()]
        if typing.get_origin(candidate) is list and typing.get_args(candidate) == (float,):
            try:
                return [float(x) for x in text.split(",") if x.strip()]
            except ValueError:
                continue
        if candidate is str:
            return text
    raise _err(name, f"cannot parse {text!r} as {_type_name(tp)}")


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a flat TOML file of TrainConfig keys (or a [train] table), then apply overrides.

    Override values may be strings (from the command line; parsed by field type) or Python values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = read_toml(path, what="train config file")
        values = dict(data.get("train", data)) if isinstance(data.get("train"), dict) else dict(data)
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise ClipscaleError(f"{path}: unknown train config key(s) {', '.join(unknown)}; "
                                 f"valid: {', '.join(FIELD_NAMES)}")
    for name, value in (overrides or {}).items():
        name = name.replace("-", "_")
        values[name] = parse_override(name, value) if isinstance(value, str) else value
        if name not in FIELD_NAMES:
            raise ClipscaleError(f"unknown train option {name!r}; valid: {', '.join(FIELD_NAMES)}")
    return TrainConfig(**values)
