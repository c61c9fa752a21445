"""Eval suites: a TOML list of datasets, each with its format, location, task(s) and task options.

```toml
name = "my-suite"
[[dataset]]
name = "cifar10"                    # the record's "dataset" key
format = "wds"                      # wds | synth | imagefolder | pairs | coco
path = "cifar10"                    # relative paths: against --data-root, else the suite's folder
task = "zeroshot_classification"    # or a list of tasks
split = "test"                      # optional; train_split (linear_probe, finetune) defaults to "train"
classnames = "names.txt"            # optional overrides; templates = "templates.txt"; image_root = ".."
[dataset.options.linear_probe]      # optional, per task; keys are the evaluator's options
fewshot_k = [0, 1, 2, 5, 10, 25]    # 0 = all training data; one record per k
```

Aggregates (the paper's vtab / imagenet_robustness averages) are rows of the results table like any
dataset: `dataset` = the aggregate's name, `task` = "aggregate", and its `metric` column = the mean of
the parts, for each (run, checkpoint) that has every part (a checkpoint missing one gets no row):

```toml
[[aggregate]]
name = "robustness"                 # a new name: neither a [[dataset]] nor another aggregate
metric = "acc1"                     # the results-table column the mean is written to
of = ["cifar10", "cifar100"]        # each dataset's `metric`, or pairs naming another metric:
# of = [{dataset = "emoji_google", metric = "image_retrieval_recall@5"}, {dataset = "x", metric = "acc1"}]
```
Every part's dataset must be a [[dataset]] of the same suite; errors name the suite file and entry.

Built-in suites live in `clipscale/evals/suites/<name>.toml` and are loaded by name with a data root.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.evals.adapters import FORMATS, load_dataset
from clipscale.evals.datasets import EvalDataset
from clipscale.evals.registry import check_options, list_evaluators, task_name

_ENTRY_KEYS = {"name", "format", "path", "task", "split", "train_split", "classnames", "templates",
               "image_root", "options"}
TRAIN_TASKS = ("linear_probe", "finetune")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how to read it; `load` builds the `EvalDataset`."""

    name: str
    format: str
    path: Path
    split: str = "test"
    train_split: str = "train"
    classnames: Path | None = None
    templates: Path | None = None
    image_root: Path | None = None
    declared_kind: str | None = None  # the set type its tasks read, for a wds set without dataset_type.txt

    def load(self, split: str | None = None) -> EvalDataset:
        return load_dataset(self.format, self.path, name=self.name, split=split or self.split,
                            classnames=self.classnames, templates=self.templates, image_root=self.image_root,
                            declared_kind=self.declared_kind)


@dataclass(frozen=True)
class Job:
    """One (dataset, task) pair of a suite: produces one record per checkpoint."""

    dataset: DatasetSpec
    task: str  # the record's "task" (e.g. linear_probe_5shot)
    evaluator: str  # registry name (e.g. linear_probe)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_train(self) -> bool:
        return self.evaluator in TRAIN_TASKS


@dataclass(frozen=True)
class Aggregate:
    """The mean of (dataset, metric) parts, written as results-table rows of dataset `name`."""

    name: str
    metric: str
    parts: tuple[tuple[str, str], ...]  # (dataset, metric)


@dataclass
class Suite:
    name: str
    source: str
    jobs: list[Job]
    aggregates: list[Aggregate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.jobs:
            raise ClipscaleError(f"{self.source}: suite has no datasets (add [[dataset]] tables)")
        seen: set[tuple[str, str]] = set()
        for job in self.jobs:
            key = (job.dataset.name, job.task)
            if key in seen:
                raise ClipscaleError(f"{self.source}: dataset {key[0]!r} task {key[1]!r} listed twice")
            seen.add(key)


def builtin_suites() -> list[str]:
    files = resources.files("clipscale.evals").joinpath("suites").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def _resolve(value: Any, base: Path, where: str, key: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ClipscaleError(f"{where}: '{key}' must be a non-empty path string")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _entry_jobs(entry: dict[str, Any], base: Path, where: str) -> list[Job]:
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ClipscaleError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(_ENTRY_KEYS)}")
    for key in ("name", "format", "path", "task"):
        if key not in entry:
            raise ClipscaleError(f"{where}: missing required key '{key}'")
    if entry["format"] not in FORMATS:
        raise ClipscaleError(f"{where}: format {entry['format']!r}; valid formats: {', '.join(FORMATS)}")
    tasks = entry["task"] if isinstance(entry["task"], list) else [entry["task"]]
    spec = DatasetSpec(
        name=str(entry["name"]), format=entry["format"], path=_resolve(entry["path"], base, where, "path"),
        split=str(entry.get("split", "test")), train_split=str(entry.get("train_split", "train")),
        classnames=_resolve(entry.get("classnames"), base, where, "classnames"),
        templates=_resolve(entry.get("templates"), base, where, "templates"),
        image_root=_resolve(entry.get("image_root"), base, where, "image_root"),
        declared_kind="retrieval" if tasks and all(t == "zeroshot_retrieval" for t in tasks) else None)
    options = entry.get("options", {})
    if not isinstance(options, dict) or set(options) - set(tasks):
        raise ClipscaleError(f"{where}: 'options' must be tables named after this entry's tasks {tasks}")
    jobs = []
    for task in tasks:
        if task not in list_evaluators():
            valid = ", ".join(list_evaluators())
            raise ClipscaleError(f"{where}: unknown task {task!r}; valid tasks: {valid}")
        opts = dict(options.get(task, {}))
        ks = opts.pop("fewshot_k", None) if task == "linear_probe" else None
        for k in ks if isinstance(ks, list) else [ks]:
            job_opts = opts if k is None else {**opts, "fewshot_k": k}
            check_options(task, job_opts, where)
            jobs.append(Job(spec, task_name(task, job_opts), task, job_opts))
    return jobs


def parse_suite(text: str, *, source: str, base: Path) -> Suite:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClipscaleError(f"{source}: not valid TOML ({exc})") from None
    entries = data.get("dataset", [])
    if not isinstance(entries, list):
        raise ClipscaleError(f"{source}: 'dataset' must be an array of tables ([[dataset]])")
    jobs = [job for i, e in enumerate(entries) for job in _entry_jobs(e, base, f"{source}: dataset[{i}]")]
    suite = Suite(name=str(data.get("name", Path(source).stem)), source=source, jobs=jobs)
    suite.aggregates = _aggregates(data.get("aggregate", []), source, {j.dataset.name for j in jobs})
    return suite


def _aggregates(entries: Any, source: str, datasets: set[str]) -> list[Aggregate]:
    if not isinstance(entries, list):
        raise ClipscaleError(f"{source}: 'aggregate' must be an array of tables ([[aggregate]])")
    out: list[Aggregate] = []
    for i, entry in enumerate(entries):
        where = f"{source}: aggregate[{i}]"
        if not isinstance(entry, dict):
            raise ClipscaleError(f"{where}: expected a table with name, metric, of")
        unknown = set(entry) - {"name", "metric", "of"}
        if unknown:
            raise ClipscaleError(f"{where}: unknown key(s) {sorted(unknown)}; valid: metric, name, of")
        for key in ("name", "metric"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ClipscaleError(f"{where}: '{key}' must be a non-empty string")
        name, metric = entry["name"], entry["metric"]
        where = f"{where} ({name!r})"
        if name in datasets or name in (a.name for a in out):
            raise ClipscaleError(f"{where}: name {name!r} is already a dataset or aggregate of this suite")
        parts = [_part(p, metric, where, datasets) for p in _listed(entry.get("of"), where)]
        if len(set(parts)) != len(parts):
            raise ClipscaleError(f"{where}: 'of' lists a (dataset, metric) pair twice")
        out.append(Aggregate(name=name, metric=metric, parts=tuple(parts)))
    return out


def _listed(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ClipscaleError(f"{where}: 'of' must be a non-empty list of dataset names or "
                             "{dataset = ..., metric = ...} tables")
    return value


def _part(value: Any, metric: str, where: str, datasets: set[str]) -> tuple[str, str]:
    if isinstance(value, str):
        value = {"dataset": value}
    if not isinstance(value, dict) or set(value) - {"dataset", "metric"} or "dataset" not in value:
        raise ClipscaleError(f"{where}: each 'of' entry is a dataset name or {{dataset = ..., metric = ...}},"
                             f" got {value!r}")
    dataset, part_metric = value["dataset"], value.get("metric", metric)
    if not isinstance(dataset, str) or not isinstance(part_metric, str) or not part_metric:
        raise ClipscaleError(f"{where}: 'dataset' and 'metric' of an 'of' entry must be strings")
    if dataset not in datasets:
        raise ClipscaleError(f"{where}: dataset {dataset!r} is not a [[dataset]] of this suite "
                             f"({', '.join(sorted(datasets))})")
    return dataset, part_metric


def load_suite(path_or_name: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Suite:
    """A suite file, or a built-in suite by name (its dataset paths resolve against `root`)."""
    path = Path(path_or_name)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ClipscaleError(f"{path}: suite file is not UTF-8 text") from None
        return parse_suite(text, source=str(path),
                           base=Path(root) if root else path.parent)
    name = str(path_or_name)
    if name not in builtin_suites():
        raise ClipscaleError(f"suite {name!r} is neither a file nor a built-in suite "
                             f"({', '.join(builtin_suites())})")
    if root is None:
        raise ClipscaleError(f"built-in suite {name!r} needs a data root (--data-root DIR)")
    text = resources.files("clipscale.evals").joinpath("suites", f"{name}.toml").read_text(encoding="utf-8")
    return parse_suite(text, source=f"suite {name}", base=Path(root))


def check_suite(path_or_name: str | os.PathLike, *, root: str | os.PathLike | None,
                available: tuple[str, ...] | None = None) -> Suite:
    """Validate a suite before anything trains on it: names, formats, tasks, options; reads no data.

    `available`: the dataset folders that will exist under `root` (a study's generated synthetic eval
    sets), each dataset's path must be one of them; otherwise, with `root`, each path must exist now.
    """
    placeholder = root if root is not None else Path("<data-root>")
    suite = load_suite(path_or_name, root=placeholder)
    for job in suite.jobs:
        path = job.dataset.path
        if available is not None:
            if path.parent != Path(placeholder) or path.name not in available:
                raise ClipscaleError(f"{suite.source}: dataset {job.dataset.name!r} path {str(path)!r} is "
                                     f"not one of the generated eval sets ({', '.join(available)})")
        elif root is not None and not path.exists():
            raise ClipscaleError(f"{suite.source}: dataset {job.dataset.name!r}: {path} not found")
        elif root is not None and job.dataset.format == "wds":
            _check_wds_task(suite.source, job)
        if job.evaluator == "zeroshot_classification":
            _check_text_files(job.dataset, data_exists=root is not None and available is None)
    return suite


def _check_text_files(ds: DatasetSpec, *, data_exists: bool) -> None:
    """Templates (only `{c}`) and class names (UTF-8) of a zero-shot set: read now, before any training,
    so a bad line never fails an evaluation after hours of training. The suite's own `templates`/
    `classnames` files are always read; the dataset folder's when its data is here."""
    from clipscale.evals.adapters import CLASSNAMES_FILE, TEMPLATES_FILE
    from clipscale.evals.datasets import check_templates, read_lines

    for given, default, what in ((ds.templates, TEMPLATES_FILE, "templates"),
                                 (ds.classnames, CLASSNAMES_FILE, "class names")):
        path = given if given is not None else ds.path / default
        if given is None and not (data_exists and path.is_file()):
            continue
        if not path.is_file() and not data_exists:
            continue  # a file under a data root that is generated later or lives elsewhere
        lines = read_lines(path, what)
        if what == "templates":
            check_templates(path, lines)


_TASK_KINDS = {"zeroshot_retrieval": ("retrieval",),
               "zeroshot_classification": ("classification", "multilabel")}


def _check_wds_task(source: str, job: Job) -> None:
    """The set's type (dataset_type.txt; without it, retrieval for a set declared only for
    zero-shot retrieval, else classification) fits the declared task, and its first shard's first sample
    has that type's label: a mismatch fails now, not after every run has trained."""
    import tarfile

    from clipscale.evals.adapters import TYPE_FILE, wds_kind

    ds = job.dataset
    type_file = ds.path / TYPE_FILE
    kind = wds_kind(ds.path, ds.declared_kind)
    wanted = _TASK_KINDS.get(job.evaluator)
    where = f"{source}: dataset {ds.name!r}"
    if wanted is not None and kind not in wanted:
        said = (f"{type_file} says {kind!r}" if type_file.is_file()
                else f"{type_file} is missing and the entry's other tasks read it as {kind}")
        raise ClipscaleError(f"{where}: task {job.evaluator!r} needs a {' or '.join(wanted)} set but {said}")
    shard = ds.path / ds.split / "0.tar"
    if not shard.is_file():
        raise ClipscaleError(f"{where}: {shard} not found (a CLIP_benchmark wds set has {ds.split}/0.tar)")
    label = {"classification": "cls", "multilabel": "npy", "retrieval": "txt"}.get(kind)
    try:
        with tarfile.open(shard, mode="r:") as tar:
            names = [m.name for _, m in zip(range(16), (m for m in tar if m.isfile()), strict=False)]
    except (tarfile.TarError, OSError) as exc:
        raise ClipscaleError(f"{where}: {shard}: not a readable tar shard ({exc})") from None
    if not names:
        raise ClipscaleError(f"{where}: {shard} has no samples")
    first = names[0]
    key = first.rsplit(".", 1)[0] if "." in first.rpartition("/")[2] else first
    exts = {n[len(key) + 1:].lower() for n in names if n.startswith(key + ".")}
    if label is not None and label not in exts:
        raise ClipscaleError(f"{where}: {shard}: first sample {key!r} has no .{label} entry (dataset type "
                             f"{kind}); set dataset_type.txt to the set's type")
