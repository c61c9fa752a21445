"""Study files: TOML → typed, validated dataclasses.

A study file is pure data (TOML via the stdlib `tomllib`): a colleague's study never executes code.
Every section is checked against its allowed keys, so a typo fails at load time with one line naming
the key and the allowed values, not hours later on a cluster.

Layout (all sections but [study] and [[grid]] optional):

    [study]     name, output_dir (relative to the study file), model_configs (open_clip config JSONs
                to register: custom architectures, passed to every run)
    [datasets.NAME]   synth = "uniform" + samples (+ seed, image_size)  |  shards = "a/{000..009}.tar"
    [train]     shared training settings (batch_size, lr, warmup_fraction, schedule, ...)
    [[rules]]   when = {model = "..."}, set = {lr = ...}: per-cell overrides, applied in order
    [[grid]]    model, dataset, data_size, samples_seen | compute, seed: a full factorial block;
                the study is the union of its blocks (several blocks = a fractional grid)
    [eval]      suite, data_root, batch_size, samples_per_task
    [fit]       metrics, laws (any of `clipscale fit`'s), frontier (none|cherti|pareto|hull), bootstrap,
                predict_compute, constrained (exclude|include data-constrained runs in C-only fits),
                fix = {PARAM = value} (held fixed in every law that has the parameter),
                link (auto|error|neglog|odds|boxcox:LAM: the scale a law of an error is fitted on)
    [executor]  jobs, threads_per_job, gpus_per_run
    [slurm]     partition, nodes, gpus_per_node, cpus_per_task, time_min, mem_gb, account, qos, ...
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import read_toml
from clipscale.train.config import FIELD_NAMES as TRAIN_FIELDS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# TrainConfig fields a study may set in [train] or through a rule (plus warmup_fraction of samples
# seen); the grid owns model/data/samples/seed and the runner owns paths, resume and evaluation.
STUDY_OWNED = ("model", "train_data", "output_dir", "data_size", "samples_seen", "seed", "resume",
               "eval_suite", "eval_data_root", "model_configs")
TRAIN_KEYS = (*(k for k in TRAIN_FIELDS if k not in STUDY_OWNED), "warmup_fraction")
# Keys that change nothing about the trained weights: excluded from the run id.
OPERATIONAL_KEYS = ("device", "workers", "threads", "log_every", "tensorboard", "progress", "peak_tflops",
                    "model_configs")  # model_configs: [study] paths, passed to every run's TrainConfig
GRID_AXES = ("model", "dataset", "data_size", "samples_seen", "compute", "seed")
RULE_MATCH_KEYS = ("model", "dataset", "data_size", "seed")
FIT_FRONTIERS = ("none", "cherti", "pareto", "hull")
FIT_CONSTRAINED = ("exclude", "include")
DEFAULT_METRICS = ("image_retrieval_recall@5",)
USR2_BEFORE_LIMIT_S = 90  # submitit's --signal=USR2@90: the job checkpoints and requeues on it
MIN_TIME_MIN = 3  # 180 s - 90 s warning - up to 30 s until SLURM checks limits: at least ~1 minute to train


def _fail(where: str, msg: str) -> ClipscaleError:
    return ClipscaleError(f"{where}: {msg}")


def _check_keys(where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(where, f"unknown key {key!r}; allowed: {', '.join(allowed)}")


def _typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int subclass: never accept it where a number is meant
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _fail(where, f"expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise _fail(where, f"expected {what}, got {value!r}")
    return value


def _positive_int(where: str, value: Any) -> int:
    _typed(where, value, int, "a positive integer")
    if value <= 0:
        raise _fail(where, f"expected a positive integer, got {value!r}")
    return int(value)


def _list_of(where: str, value: Any, check: Callable[[str, Any], Any]) -> tuple:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(where, "expected at least one value")
    return tuple(check(f"{where}[{i}]", v) for i, v in enumerate(values))


@dataclass(frozen=True)
class DatasetSpec:
    """A training dataset: built-in synthetic shards (generated on demand) or existing shards."""

    name: str
    synth: str | None = None
    samples: int = 0
    seed: int = 0
    image_size: int = 32
    shards: str | None = None

    def identity(self) -> dict[str, Any]:
        """What defines the data (part of every run id that uses it)."""
        if self.synth is not None:
            return {"synth": self.synth, "samples": self.samples, "seed": self.seed,
                    "image_size": self.image_size}
        return {"shards": self.shards}


@dataclass(frozen=True)
class GridBlock:
    """One full-factorial block of the grid; samples_seen or compute (isoFLOP groups), not both."""

    model: tuple[str, ...]
    dataset: tuple[str, ...]
    data_size: tuple[int, ...]
    samples_seen: tuple[int, ...] = ()
    compute: tuple[float, ...] = ()
    seed: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Rule:
    when: dict[str, Any]
    set: dict[str, Any]


@dataclass(frozen=True)
class EvalSpec:
    suite: str = "synth"
    data_root: str | None = None
    batch_size: int = 256
    samples_per_task: int = 1000


@dataclass(frozen=True)
class FitSpec:
    metrics: tuple[str, ...] = DEFAULT_METRICS
    laws: tuple[str, ...] = ("frontier",)
    bootstrap: int = 200
    predict_compute: tuple[float, ...] = ()
    frontier: str = "none"  # how points are thinned before fitting; law "frontier" is power + cherti
    constrained: str = "exclude"  # data-constrained runs in fits of laws of C alone and in the isoFLOP part
    fix: dict[str, float] = field(default_factory=dict)  # parameters held fixed (`clipscale fit --fix`)
    link: str = "error"  # scale the law of an error is fitted on (`clipscale fit --link`)


@dataclass(frozen=True)
class ExecutorSpec:
    jobs: int = 1
    threads_per_job: int = 0  # 0: cores divided evenly among jobs
    gpus_per_run: int = 0  # > 1: the run is launched with torchrun over that many local GPUs


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 8
    time_min: int = 60
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_requeue: int = 3

    def __post_init__(self) -> None:
        if self.time_min < MIN_TIME_MIN:
            raise _fail("[slurm] time_min", f"{self.time_min} minutes is below the {MIN_TIME_MIN} a job "
                        f"needs to make progress: submitit has SLURM send USR2 {USR2_BEFORE_LIMIT_S} s "
                        "before the limit and SLURM checks limits about every 30 s, so the job would stop "
                        "and requeue within seconds of every start")


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: Path  # the study file
    output_dir: Path  # absolute
    datasets: dict[str, DatasetSpec]
    train: dict[str, Any]
    rules: tuple[Rule, ...]
    grid: tuple[GridBlock, ...]
    eval: EvalSpec = field(default_factory=EvalSpec)
    fit: FitSpec = field(default_factory=FitSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)

    @property
    def runs_dir(self) -> Path:
        return self.output_dir / "runs"

    @property
    def data_dir(self) -> Path:
        return self.output_dir / "data"

    def eval_root(self) -> Path:
        root = self.eval.data_root
        return Path(root) if root else self.data_dir / "eval"


def _parse_dataset(name: str, table: dict[str, Any]) -> DatasetSpec:
    where = f"[datasets.{name}]"
    _check_keys(where, table, ("synth", "samples", "seed", "image_size", "shards"))
    if not NAME_RE.match(name):
        raise _fail(where, "dataset names use letters, digits, '_', '.', '-'")
    if ("synth" in table) == ("shards" in table):
        raise _fail(where, "set exactly one of 'synth' (a built-in distribution) or 'shards' (a shard spec)")
    if "shards" in table:
        return DatasetSpec(name=name, shards=_typed(f"{where} shards", table["shards"], str, "a string"))
    synth = _typed(f"{where} synth", table["synth"], str, "a distribution name")
    if "samples" not in table:
        raise _fail(where, "'samples' is required with 'synth' (how many samples to generate)")
    return DatasetSpec(name=name, synth=synth, samples=_positive_int(f"{where} samples", table["samples"]),
                       seed=_typed(f"{where} seed", table.get("seed", 0), int, "an integer"),
                       image_size=_positive_int(f"{where} image_size", table.get("image_size", 32)))


def _positive_number(where: str, value: Any) -> float:
    _typed(where, value, (int, float), "a positive number")
    if not value > 0:
        raise _fail(where, f"expected a positive number, got {value!r}")
    return float(value)


def _parse_block(i: int, table: dict[str, Any], datasets: dict[str, DatasetSpec]) -> GridBlock:
    where = f"[[grid]] #{i + 1}"
    _check_keys(where, table, GRID_AXES)
    for key in ("model", "dataset", "data_size"):
        if key not in table:
            raise _fail(where, f"missing key {key!r}")
    if ("samples_seen" in table) == ("compute" in table):
        raise _fail(where, "set exactly one of 'samples_seen' or 'compute' (GMACs; isoFLOP groups)")
    block = GridBlock(
        model=_list_of(f"{where} model", table["model"], lambda w, v: _typed(w, v, str, "a model name")),
        dataset=_list_of(f"{where} dataset", table["dataset"], lambda w, v: _typed(w, v, str, "a name")),
        data_size=_list_of(f"{where} data_size", table["data_size"], _positive_int),
        samples_seen=_list_of(f"{where} samples_seen", table["samples_seen"], _positive_int)
        if "samples_seen" in table else (),
        compute=(_list_of(f"{where} compute", table["compute"], _positive_number)
                 if "compute" in table else ()),
        seed=_list_of(f"{where} seed", table.get("seed", 0), lambda w, v: _typed(w, v, int, "an integer")),
    )
    for name in block.dataset:
        if name not in datasets:
            defined = ", ".join(datasets) or "none"
            raise _fail(f"{where} dataset", f"unknown dataset {name!r}; defined: {defined}")
        ds = datasets[name]
        if ds.synth is not None and max(block.data_size) > ds.samples:
            raise _fail(f"{where} data_size",
                        f"{max(block.data_size)} > {ds.samples} samples of dataset {name!r}")
    return block


def _check_train(where: str, table: dict[str, Any]) -> dict[str, Any]:
    _check_keys(where, table, TRAIN_KEYS)
    out = dict(table)
    for key in ("batch_size", "workers", "threads", "log_every"):
        if key in out and not (key in ("workers", "threads") and out[key] == 0):
            _positive_int(f"{where} {key}", out[key])
    for key in ("lr", "weight_decay", "warmup"):
        if key in out:
            _typed(f"{where} {key}", out[key], (int, float), "a number")
    if "warmup_fraction" in out:
        wf = _typed(f"{where} warmup_fraction", out["warmup_fraction"], (int, float), "a number in [0, 1)")
        if not 0 <= wf < 1:
            raise _fail(f"{where} warmup_fraction", f"expected a number in [0, 1), got {wf!r}")
    if "warmup" in out and "warmup_fraction" in out:
        raise _fail(where, "set 'warmup' (samples) or 'warmup_fraction', not both")
    if "checkpoint_points" in out:
        pts = _list_of(f"{where} checkpoint_points", out["checkpoint_points"], _positive_number)
        if any(p > 1 for p in pts):
            raise _fail(f"{where} checkpoint_points", "expected fractions of samples_seen in (0, 1]")
        out["checkpoint_points"] = sorted(set(pts))
    return out


def _parse_rules(items: Any) -> tuple[Rule, ...]:
    rules = []
    for i, item in enumerate(_typed("[[rules]]", items, list, "an array of tables")):
        where = f"[[rules]] #{i + 1}"
        _typed(where, item, dict, "a table")
        _check_keys(where, item, ("when", "set"))
        when = _typed(f"{where} when", item.get("when", {}), dict, "a table")
        _check_keys(f"{where} when", when, RULE_MATCH_KEYS)
        rules.append(Rule(when=dict(when), set=_check_train(f"{where} set", _typed(
            f"{where} set", item.get("set", {}), dict, "a table"))))
    return tuple(rules)


def _section(doc: dict[str, Any], key: str, cls: type, allowed: tuple[str, ...]) -> Any:
    table = _typed(f"[{key}]", doc.get(key, {}), dict, "a table")
    _check_keys(f"[{key}]", table, allowed)
    defaults = cls()
    kwargs = {}
    for k, v in table.items():
        default = getattr(defaults, k)
        if isinstance(default, tuple):
            v = tuple(v) if isinstance(v, list) else (v,)
        elif isinstance(default, bool | int | float | str):
            _typed(f"[{key}] {k}", v, type(default) if not isinstance(default, float) else (int, float),
                   f"a {type(default).__name__}")
        kwargs[k] = v
    return cls(**kwargs)


def _parse_fit(doc: dict[str, Any]) -> FitSpec:
    from clipscale.fit.laws import list_laws  # numpy only; spec stays importable without pandas
    from clipscale.fit.link import parse_link

    fit = _section(doc, "fit", FitSpec, tuple(FitSpec.__dataclass_fields__))
    laws = list_laws()
    for i, law in enumerate(fit.laws):
        if law not in laws:
            raise _fail(f"[fit] laws[{i}]", f"unknown law {law!r}; allowed: {', '.join(laws)}")
    for key, allowed in (("frontier", FIT_FRONTIERS), ("constrained", FIT_CONSTRAINED)):
        if getattr(fit, key) not in allowed:
            raise _fail(f"[fit] {key}", f"expected one of {', '.join(allowed)}, got {getattr(fit, key)!r}")
    _list_of("[fit] metrics", list(fit.metrics), lambda w, v: _typed(w, v, str, "a metric name"))
    _list_of("[fit] predict_compute", list(fit.predict_compute) or [1.0], _positive_number)
    if fit.bootstrap < 0:
        raise _fail("[fit] bootstrap", f"expected an integer >= 0, got {fit.bootstrap}")
    _typed("[fit] link", fit.link, str, "auto, error, neglog, odds or boxcox:LAM")
    try:
        parse_link(fit.link)
    except ClipscaleError as exc:
        raise _fail("[fit] link", str(exc).replace("--link ", "")) from None
    _typed("[fit] fix", fit.fix, dict, "a table of parameter = number")
    for k, v in fit.fix.items():
        _typed(f"[fit] fix {k}", v, (int, float), "a number")
    return fit


def parse_study(doc: dict[str, Any], *, path: Path) -> StudySpec:
    """Validate a parsed TOML document; `path` anchors relative paths (output_dir, shards)."""
    _check_keys("study file", doc, ("study", "datasets", "train", "rules", "grid", "eval", "fit",
                                    "executor", "slurm"))
    head = _typed("[study]", doc.get("study", {}), dict, "a table")
    _check_keys("[study]", head, ("name", "output_dir", "model_configs"))
    name = _typed("[study] name", head.get("name", path.stem), str, "a string")
    if not NAME_RE.match(name):
        raise _fail("[study] name", f"{name!r}: use letters, digits, '_', '.', '-'")
    output_dir = (path.parent / _typed("[study] output_dir", head.get("output_dir", name), str, "a path"))
    datasets = {n: _parse_dataset(n, _typed(f"[datasets.{n}]", t, dict, "a table"))
                for n, t in _typed("[datasets]", doc.get("datasets", {}), dict, "a table").items()}
    datasets = {n: d if d.shards is None or Path(d.shards).is_absolute()
                else DatasetSpec(name=n, shards=str(path.parent / d.shards)) for n, d in datasets.items()}
    blocks = _typed("[[grid]]", doc.get("grid", []), list, "an array of tables ([[grid]])")
    if not blocks:
        raise _fail("study file", "no [[grid]] block: nothing to run")
    grid = tuple(_parse_block(i, _typed(f"[[grid]] #{i + 1}", b, dict, "a table"), datasets)
                 for i, b in enumerate(blocks))
    fit = _parse_fit(doc)
    executor = _section(doc, "executor", ExecutorSpec, ("jobs", "threads_per_job", "gpus_per_run"))
    _positive_int("[executor] jobs", executor.jobs)
    slurm = _section(doc, "slurm", SlurmSpec, tuple(SlurmSpec.__dataclass_fields__))
    eval_spec = _section(doc, "eval", EvalSpec, ("suite", "data_root", "batch_size", "samples_per_task"))
    if (path.parent / eval_spec.suite).is_file():  # a suite file next to the study, else a built-in name
        eval_spec = _replace(eval_spec, suite=str(path.parent / eval_spec.suite))
    train = _check_train("[train]", _typed("[train]", doc.get("train", {}), dict, "a table"))
    if "model_configs" in head:  # custom open_clip architectures: registered here and in every run
        configs = _list_of("[study] model_configs", head["model_configs"],
                           lambda w, v: _typed(w, v, str, "a path to a model config JSON"))
        train["model_configs"] = [str(path.parent / c) for c in configs]
    return StudySpec(
        name=name, path=path, output_dir=output_dir.resolve(), datasets=datasets,
        train=train,
        rules=_parse_rules(doc.get("rules", [])), grid=grid,
        eval=eval_spec,
        fit=fit, executor=executor, slurm=slurm,
    )


def load_study(path: str | Path, *, output_dir: str | Path | None = None) -> StudySpec:
    """Read and validate a study file; `output_dir` overrides [study] output_dir."""
    path = Path(path)
    doc = read_toml(path, what="study file")
    try:
        spec = parse_study(doc, path=path.resolve())
    except ClipscaleError as exc:
        raise ClipscaleError(f"{path}: {exc}") from None
    if spec.train.get("model_configs"):  # so planning (FLOPs of each model) knows the names
        from clipscale.models.registry import register_model_configs

        register_model_configs(spec.train["model_configs"])
    if output_dir is not None:
        spec = _replace(spec, output_dir=Path(output_dir).resolve())
    return spec


def _replace(spec: StudySpec, **changes: Any) -> StudySpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)
