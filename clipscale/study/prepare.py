"""What a study's runs need ready before they train: the training datasets and eval sets, built once per
identity (`prepare_dataset`, `prepare_eval`), the identity of the eval settings that decides re-evaluation
(`eval_identity`, `eval_datasets`), and the checks that a local study's data and suite exist
(`check_data`, `check_eval`). Split from runner.py, which schedules and runs; it imports this.
"""


from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.io import fsync_dir
from clipscale.study.hooks import Hooks
from clipscale.study.spec import DatasetSpec, StudySpec

EVAL_SEED = 1_000_003  # eval sets are drawn with a seed no training set uses


def eval_datasets(study: StudySpec) -> dict[str, str]:
    """A fingerprint per dataset of the suite: its suite entry (tasks, options, paths) and, for data
    under [eval] data_root, every file's size and mtime (no reading: cheap on each rerun). Built-in
    synthetic sets are identified by their generation settings (the generated folder's name)."""
    from clipscale.evals.suite import load_suite

    root = study.eval_root() if study.eval.data_root else _eval_identity_dir(study)[0]
    entries: dict[str, dict[str, Any]] = {}
    for job in load_suite(study.eval.suite, root=root).jobs:
        ds = job.dataset
        entry = entries.setdefault(ds.name, {"format": ds.format, "split": ds.split, "paths": [
            str(p) for p in (ds.path, ds.classnames, ds.templates, ds.image_root)], "jobs": []})
        entry["jobs"].append([job.task, job.evaluator, job.options])
        if study.eval.data_root and "files" not in entry:
            entry["files"] = [_files_fingerprint(p) for p in (ds.path, ds.classnames, ds.templates)]
    if not study.eval.data_root:
        for entry in entries.values():
            entry["generated"] = {"samples_per_task": study.eval.samples_per_task, "root": root.name}
    return {name: _digest(entry) for name, entry in sorted(entries.items())}


def _files_fingerprint(path: Path | None) -> list[list[Any]]:
    """(relative path, size, mtime_ns) of a file or of every file under a folder."""
    if path is None or not path.exists():
        return []
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            st = full.stat()
            out.append([str(full.relative_to(path)), st.st_size, st.st_mtime_ns])
    return out


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def eval_identity(study: StudySpec, datasets: dict[str, str] | None = None) -> str:
    """What defines the evaluation of a checkpoint: the suite's datasets, their entries and their files."""
    return _digest({"suite": eval_datasets(study) if datasets is None else datasets})


def _identity_dir(root: Path, name: str, identity: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return root / f"{name}-{digest}"


def _build_once(out: Path, build: Callable[[Path], None]) -> None:
    """Build a directory under a temporary name and rename it into place: present means complete."""
    if out.exists():
        return
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    try:
        os.rename(tmp, out)
    except OSError:  # another executor finished it first
        if not out.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(out.parent)


def discard_partial_builds(root: Path, pid: int | None) -> None:
    """Remove the folders a killed preparing process left half-built under `root` (`_build_once` names
    them after its pid; that process is dead, so nothing writes them any more)."""
    if pid is None:
        return
    for tmp in root.glob(f".*.tmp-{pid}"):
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_dataset(ds: DatasetSpec, root: Path, hooks: Hooks) -> str:
    """The shard spec of a dataset, generating built-in synthetic shards first if needed."""
    if ds.shards is not None:
        return ds.shards
    out = _identity_dir(root, ds.name, ds.identity())
    _build_once(out, lambda d: hooks.train_data(d, samples=ds.samples, seed=ds.seed,
                                                image_size=ds.image_size, distribution=ds.synth))
    shards = sorted(p.name for p in out.glob("*.tar"))
    if not shards:
        raise ClipscaleError(f"{out}: no shards were generated")
    if len(shards) == 1:
        return str(out / shards[0])
    return str(out / f"{{{shards[0][:-4]}..{shards[-1][:-4]}}}.tar")


def _eval_identity_dir(study: StudySpec) -> tuple[Path, int]:
    sizes = sorted({d.image_size for d in study.datasets.values() if d.synth}) or [32]
    identity = {"seed": EVAL_SEED, "image_size": sizes[0], "samples_per_task": study.eval.samples_per_task}
    return _identity_dir(study.data_dir, "eval", identity), sizes[0]


def prepare_eval(study: StudySpec, hooks: Hooks) -> str:
    """The eval data root: [eval] data_root, else the built-in synthetic eval sets, generated once."""
    if study.eval.data_root:
        return str(study.eval_root())
    out, image_size = _eval_identity_dir(study)
    _build_once(out, lambda d: hooks.eval_data(d, seed=EVAL_SEED, image_size=image_size,
                                               samples_per_task=study.eval.samples_per_task))
    return str(out)


def check_eval(study: StudySpec, *, missing_ok: bool = False) -> list[str]:
    """Refuse a bad [eval] suite (unknown suite, dataset, task, option; missing data) before any training.

    `missing_ok` (dry runs of `--executor slurm`, which plan a cluster's study elsewhere): paths not here
    (eval data root, suite file, shard folders) are returned, unchecked, instead of refused.
    """
    from clipscale.evals.suite import builtin_suites, check_suite

    unchecked = [d.shards for d in study.datasets.values()
                 if d.shards is not None and not Path(d.shards).parent.is_dir()] if missing_ok else []
    suite = study.eval.suite
    a_path = suite.endswith(".toml") or "/" in suite  # a bare name must be a built-in suite, here too
    if not Path(suite).is_file() and suite not in builtin_suites():
        if missing_ok and a_path:
            return [*unchecked, suite]
        builtin = ", ".join(builtin_suites())
        if a_path:
            raise ClipscaleError(f"{study.path}: [eval] suite: {study.path.parent / suite} does not exist (a "
                                 f"suite file is read relative to the study file; built-ins: {builtin})")
        raise ClipscaleError(f"{study.path}: [eval] suite {suite!r} is neither a file nor a built-in suite "
                             f"({builtin})")
    if study.eval.data_root:
        root = study.eval_root()
        if not root.is_dir():
            if missing_ok:
                check_suite(suite, root=None)  # names, formats, tasks, options: no data read
                return [*unchecked, str(root)]
            raise ClipscaleError(f"{study.path}: [eval] data_root {str(root)!r} is not a directory")
        check_suite(suite, root=root)
        return unchecked
    from clipscale.data.synth.evalsets import TASKS

    check_suite(suite, root=_eval_identity_dir(study)[0], available=tuple(t.name for t in TASKS))
    return unchecked


def check_data(study: StudySpec) -> None:
    """Refuse, in one line naming the study file and dataset, shards that are not here: a local run trains
    here, so a wrong path must fail at plan time (dry run included), not as a failed run after the eval
    sets were made. (`--executor slurm` plans without the cluster's files: not called there.)"""
    from clipscale.data.shard_index import expand_spec

    used = {name for block in study.grid for name in block.dataset}
    for name in sorted(used):
        shards = study.datasets[name].shards
        if shards is None:
            continue
        try:
            expand_spec(shards)
        except ClipscaleError as exc:
            raise ClipscaleError(f"{study.path}: [datasets.{name}] shards: "
                                 f"{str(exc).removeprefix('train_data: ')}") from None
