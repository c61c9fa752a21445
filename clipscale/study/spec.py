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
                the study is the union of its blocks (several blocks = a fractional grid); data_size
                defaults to each dataset's samples (synth `samples`; for shards, the complete samples
                they hold, counted at load: `clipscale.data.shard_count`), and a larger one is an error
    [eval]      suite, data_root (both relative to the study file), batch_size, samples_per_task
    [fit]       metrics, laws (any of `clipscale fit`'s), frontier (none|cherti|pareto|hull), bootstrap,
                predict_compute, max_passes (runs with more passes over their unique data are left
                out of laws of C alone and of the isoFLOP analysis; default 10, inf keeps all; the old
                constrained = "exclude"|"include" still works), check_largest (default true: refit
                each law without the largest compute group and report whether it predicts that group),
                fix = {PARAM = value} (held fixed in every law that has the parameter),
                link (auto|error|neglog|odds|boxcox:LAM: the scale a law of an error is fitted on)
    [executor]  jobs, threads_per_job, gpus_per_run
    [slurm]     partition, nodes, gpus_per_node, cpus_per_task, time_min, mem_gb, account, qos, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import read_toml
from clipscale.study.spec_types import (
    DEFAULT_METRICS,
    FIT_CONSTRAINED,
    FIT_FRONTIERS,
    FIT_N_COLUMNS,
    FIT_OBJECTIVES,
    GRID_AXES,
    MIN_TIME_MIN,
    NAME_RE,
    OPERATIONAL_KEYS,
    RULE_MATCH_KEYS,
    STUDY_OWNED,
    TRAIN_KEYS,
    USR2_BEFORE_LIMIT_S,
    DatasetSpec,
    EvalSpec,
    ExecutorSpec,
    FitSpec,
    GridBlock,
    Rule,
    SlurmSpec,
    StudySpec,
)

# The types live in spec_types.py; importers keep using clipscale.study.spec (parser and types).
__all__ = [
    "DEFAULT_METRICS",
    "FIT_CONSTRAINED",
    "FIT_FRONTIERS",
    "FIT_N_COLUMNS",
    "FIT_OBJECTIVES",
    "GRID_AXES",
    "MIN_TIME_MIN",
    "NAME_RE",
    "OPERATIONAL_KEYS",
    "RULE_MATCH_KEYS",
    "STUDY_OWNED",
    "TRAIN_KEYS",
    "USR2_BEFORE_LIMIT_S",
    "DatasetSpec",
    "EvalSpec",
    "ExecutorSpec",
    "FitSpec",
    "GridBlock",
    "Rule",
    "SlurmSpec",
    "StudySpec",
    "dataset_notes",
    "load_study",
    "parse_study",
]


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


def _count_shards(ds: DatasetSpec) -> DatasetSpec:
    """A shard dataset with `size` = the samples its shards hold; None where they are not here (a
    cluster path planned on a laptop: data_size stays as given, or unknown = all)."""
    if ds.shards is None:
        return ds
    from clipscale.data.shard_count import count_shard_samples

    try:
        return _replace(ds, size=count_shard_samples(ds.shards))
    except ClipscaleError:
        return ds


def dataset_notes(spec: StudySpec) -> list[str]:
    """One line per shard dataset for `--dry-run`: its sample count, or that its shards are not here."""
    out = []
    for name, ds in spec.datasets.items():
        if ds.shards is None:
            continue
        if ds.size is None:
            out.append(f"dataset {name}: shards {ds.shards} not found here: data_size not checked; where "
                       "a [[grid]] block omits it, it is unknown here (all the shards hold)")
        else:
            out.append(f"dataset {name}: {ds.size:,} samples in its shards (data_size default and maximum)")
    return out


def _positive_number(where: str, value: Any) -> float:
    _typed(where, value, (int, float), "a positive number")
    if not (value > 0 and math.isfinite(value)):
        raise _fail(where, f"expected a positive number, got {value!r}")
    return float(value)


def _check_eval_spec(spec: EvalSpec) -> None:
    _positive_int("[eval] batch_size", spec.batch_size)
    _positive_int("[eval] samples_per_task", spec.samples_per_task)


def _check_executor(spec: ExecutorSpec) -> None:
    _positive_int("[executor] jobs", spec.jobs)
    for key in ("threads_per_job", "gpus_per_run"):
        value = getattr(spec, key)
        if value < 0:
            raise _fail(f"[executor] {key}", f"expected an integer >= 0 (0: automatic), got {value!r}")


def _check_slurm(spec: SlurmSpec) -> None:
    """Every [slurm] key typed and in range, so a cluster never receives `mem_gb = "lots"`."""
    for key in ("nodes", "cpus_per_task", "time_min"):
        _positive_int(f"[slurm] {key}", getattr(spec, key))
    for key in ("gpus_per_node", "max_requeue"):
        value = _typed(f"[slurm] {key}", getattr(spec, key), int, "an integer >= 0")
        if value < 0:
            raise _fail(f"[slurm] {key}", f"expected an integer >= 0, got {value!r}")
    if spec.mem_gb is not None:
        _positive_int("[slurm] mem_gb", spec.mem_gb)
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(spec, key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise _fail(f"[slurm] {key}", f"expected a non-empty string, got {value!r}")


def _parse_block(i: int, table: dict[str, Any], datasets: dict[str, DatasetSpec]) -> GridBlock:
    where = f"[[grid]] #{i + 1}"
    _check_keys(where, table, GRID_AXES)
    for key in ("model", "dataset"):
        if key not in table:
            raise _fail(where, f"missing key {key!r}")
    if ("samples_seen" in table) == ("compute" in table):
        raise _fail(where, "set exactly one of 'samples_seen' or 'compute' (GMACs; isoFLOP groups)")
    block = GridBlock(
        model=_list_of(f"{where} model", table["model"], lambda w, v: _typed(w, v, str, "a model name")),
        dataset=_list_of(f"{where} dataset", table["dataset"], lambda w, v: _typed(w, v, str, "a name")),
        data_size=(_list_of(f"{where} data_size", table["data_size"], _positive_int)
                   if "data_size" in table else ()),
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
        if ds.synth is not None and block.data_size and max(block.data_size) > ds.samples:
            raise _fail(f"{where} data_size",
                        f"{max(block.data_size)} > {ds.samples} samples of dataset {name!r}")
        if ds.size is not None and block.data_size and max(block.data_size) > ds.size:
            raise _fail(f"{where} data_size", f"{max(block.data_size)} > the {ds.size} samples the shards "
                        f"of dataset {name!r} hold ({ds.shards})")
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
        elif default is None:  # optional keys (`str | None`, `int | None`): typed as their annotation says
            kind = int if str(cls.__dataclass_fields__[k].type).startswith("int") else str
            _typed(f"[{key}] {k}", v, kind, "an integer" if kind is int else "a string")
        kwargs[k] = v
    return cls(**kwargs)


def _parse_fit(doc: dict[str, Any]) -> FitSpec:
    from clipscale.fit.estimation.link import parse_link
    from clipscale.fit.laws import list_laws  # numpy only; spec stays importable without pandas

    fit = _section(doc, "fit", FitSpec, tuple(FitSpec.__dataclass_fields__))
    laws = list_laws()
    if not fit.laws:
        raise _fail("[fit] laws", f"expected at least one law; allowed: {', '.join(laws)}")
    for i, law in enumerate(fit.laws):
        if law not in laws:
            raise _fail(f"[fit] laws[{i}]", f"unknown law {law!r}; allowed: {', '.join(laws)}")
    for key, allowed in (("frontier", FIT_FRONTIERS), ("n_column", FIT_N_COLUMNS)):
        if getattr(fit, key) not in allowed:
            raise _fail(f"[fit] {key}", f"expected one of {', '.join(allowed)}, got {getattr(fit, key)!r}")
    fit = _max_passes(fit, doc.get("fit", {}))
    _list_of("[fit] metrics", list(fit.metrics), lambda w, v: _typed(w, v, str, "a metric name"))
    _list_of("[fit] predict_compute", list(fit.predict_compute) or [1.0], _positive_number)
    if fit.bootstrap < 0:
        raise _fail("[fit] bootstrap", f"expected an integer >= 0, got {fit.bootstrap}")
    _typed("[fit] link", fit.link, str, "auto, error, neglog, odds or boxcox:LAM")
    try:
        parse_link(fit.link)
    except ClipscaleError as exc:
        raise _fail("[fit] link", str(exc).replace("--link ", "")) from None
    if fit.objective not in FIT_OBJECTIVES:
        raise _fail("[fit] objective", f"expected one of {', '.join(FIT_OBJECTIVES)}, got {fit.objective!r}")
    _typed("[fit] fix", fit.fix, dict, "a table of parameter = number")
    for k, v in fit.fix.items():
        _typed(f"[fit] fix {k}", v, (int, float), "a number")
    return fit


def _parse_eval(doc: dict[str, Any], path: Path) -> EvalSpec:
    """[eval]: a suite file and a data_root are relative to the study file (as shards and output_dir)."""
    spec = _section(doc, "eval", EvalSpec, ("suite", "data_root", "batch_size", "samples_per_task"))
    if spec.data_root is not None:
        root = _typed("[eval] data_root", spec.data_root, str, "a path (a string)")
        if not root:
            raise _fail("[eval] data_root", "expected a non-empty path")
        spec = _replace(spec, data_root=str(path.parent / Path(root).expanduser()))
    if (path.parent / spec.suite).is_file():  # a suite file next to the study, else a built-in name
        spec = _replace(spec, suite=str(path.parent / spec.suite))
    return spec


def _max_passes(fit: FitSpec, table: dict[str, Any]) -> FitSpec:
    """[fit] max_passes (> 0; inf: no limit), or its old alias constrained = "exclude" | "include"."""
    if not fit.max_passes > 0:  # also refuses nan
        raise _fail("[fit] max_passes", f"expected a number of passes > 0 (inf: no limit), "
                    f"got {fit.max_passes!r}")
    if fit.constrained is None:
        return _replace(fit, max_passes=float(fit.max_passes))
    if fit.constrained not in FIT_CONSTRAINED:
        raise _fail("[fit] constrained", f"expected one of {', '.join(FIT_CONSTRAINED)}, "
                    f"got {fit.constrained!r} (its new spelling: max_passes = N)")
    if "max_passes" in table:
        raise _fail("[fit] constrained", "set max_passes only (constrained is its old spelling)")
    return _replace(fit, max_passes=float("inf") if fit.constrained == "include" else float(fit.max_passes))


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
    datasets = {n: _count_shards(d) for n, d in datasets.items()}
    blocks = _typed("[[grid]]", doc.get("grid", []), list, "an array of tables ([[grid]])")
    if not blocks:
        raise _fail("study file", "no [[grid]] block: nothing to run")
    grid = tuple(_parse_block(i, _typed(f"[[grid]] #{i + 1}", b, dict, "a table"), datasets)
                 for i, b in enumerate(blocks))
    fit = _parse_fit(doc)
    executor = _section(doc, "executor", ExecutorSpec, ("jobs", "threads_per_job", "gpus_per_run"))
    _check_executor(executor)
    slurm = _section(doc, "slurm", SlurmSpec, tuple(SlurmSpec.__dataclass_fields__))
    _check_slurm(slurm)
    eval_spec = _parse_eval(doc, path)
    _check_eval_spec(eval_spec)
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
