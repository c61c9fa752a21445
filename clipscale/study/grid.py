"""Grid expansion: a study's blocks → the list of runs, each with a stable id.

A run id is a hash of what determines the trained weights (model, data identity, data size, samples
seen, seed, training settings), so reordering the study file changes nothing, editing one cell reruns
only that cell, and operational knobs (device, worker counts, log interval) never invalidate results;
in stream mode, where batches depend on the loader workers and world size, those are in the id too.

Compute-matched (isoFLOP) groups: a block may give `compute` (forward GMACs per sample × samples seen,
the paper's C) instead of `samples_seen`; each model then trains for samples_seen = C / GMACs, rounded
to whole batches. A model × samples grid confounds size with compute; isoFLOP groups show which size
wins at each budget.

Runs train whole batches, so a `samples_seen` that is not a multiple of the run's batch size is
planned as the next multiple (what the trainer trains), with a warning naming the file and block:
the run id, run.json, `status`, the results table and summary.json then all state the same number.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError
from clipscale.study.spec import OPERATIONAL_KEYS, StudySpec

# model -> (GMACs per sample, M params, M params without token/positional embeddings); a 2-tuple
# (no params_nonemb) is accepted and leaves that column null
# Keys added after run ids existed, at the value that trains as before: left out of the id, so a study
# that writes `augment = "none"` keeps the ids of one that never mentions it.
NEUTRAL_KEYS = {"augment": "none"}
FlopsFn = Callable[[str], tuple[float, ...]]
log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # plan() runs several times per command: each warning is given once


@dataclass(frozen=True)
class RunPlan:
    """One grid cell, fully resolved: everything needed to train and evaluate it."""

    run_id: str
    model: str
    dataset: str
    distribution: str  # the synthetic distribution, or the dataset name for external shards
    data_size: int | None  # None: all the samples of shards not present here (a dry run's cluster path)
    samples_seen: int
    seed: int
    gmacs: float
    mparams: float
    train: dict[str, Any]  # TrainConfig keyword arguments besides model/data/samples/seed/output_dir
    compute_group: float | None = None  # the isoFLOP level this run belongs to, if any
    run_dir: Path = field(default=Path("."))
    mparams_nonemb: float | None = None  # params without token/positional embeddings (models.flops)

    @property
    def compute(self) -> float:
        return self.gmacs * self.samples_seen

    def cell(self) -> dict[str, Any]:
        """The study-level description written to RUN_DIR/run.json (read back by results/status)."""
        return {"run_id": self.run_id, "model": self.model, "dataset": self.dataset,
                "distribution": self.distribution, "data_size": self.data_size,
                "samples_seen": self.samples_seen, "seed": self.seed, "gmacs": self.gmacs,
                "mparams": self.mparams, "mparams_nonemb": self.mparams_nonemb, "compute": self.compute,
                "compute_group": self.compute_group,
                "train": self.train}


def default_flops(model: str) -> tuple[float, float, float]:
    from clipscale.models.flops import count_flops

    counted = count_flops(model)
    return float(counted.gmacs), float(counted.mparams), float(counted.mparams_nonemb)


def _ladder_lr(model: str) -> float | None:
    from clipscale.models.ladder import LADDER

    rung = LADDER.get(model)
    return None if rung is None else rung.lr


def _matches(when: dict[str, Any], cell: dict[str, Any]) -> bool:
    for key, want in when.items():
        options = want if isinstance(want, list) else [want]
        if cell[key] not in options:
            return False
    return True


def resolve_train(spec: StudySpec, cell: dict[str, Any], *, used: list[bool] | None = None) -> dict[str, Any]:
    """Shared [train] settings, then matching rules in file order; lr defaults to the ladder's.

    `used[i]` is set when rule i matches (plan() refuses rules that match no cell)."""
    train = dict(spec.train)
    for i, rule in enumerate(spec.rules):
        if _matches(rule.when, cell):
            train.update(rule.set)
            if used is not None:
                used[i] = True
    if "lr" not in train:
        lr = _ladder_lr(cell["model"])
        if lr is None:
            raise ClipscaleError(f"model {cell['model']!r} is not a ladder size: set [train] lr or a rule")
        train["lr"] = lr
    return train


def _samples_for(compute: float, gmacs: float, batch: int) -> int:
    return max(batch, round(compute / gmacs / batch) * batch)


def _batch_size(train: dict[str, Any]) -> int:
    """The run's global batch: its setting, else TrainConfig's default."""
    from clipscale.train.config import TrainConfig

    batch = train.get("batch_size", TrainConfig.__dataclass_fields__["batch_size"].default)
    return batch if isinstance(batch, int) and batch > 0 else 1  # a bad value fails in _validate_train


def _whole_batches(where: str, samples: int, batch: int) -> int:
    """`samples` rounded up to whole batches, as the trainer trains them; a warning when it changes."""
    rounded = -(-samples // batch) * batch
    if rounded != samples:
        message = (f"{where} samples_seen: {samples} is not a whole number of batches (batch_size {batch}); "
                   f"planned and trained as {rounded} ({rounded // batch} steps)")
        if message not in _WARNED:
            _WARNED.add(message)
            log.warning("%s", message)
    return rounded


def _validate_train(model: str, samples: int, train: dict[str, Any]) -> None:
    """Build the run's TrainConfig now, so a bad setting fails at plan time naming its field."""
    from clipscale.train.config import TrainConfig, check_trackers

    config = TrainConfig(model=model, train_data="plan-check.tar", samples_seen=samples, **train)
    check_trackers(config.report_to)  # a missing tracker package fails before anything is written


def stream_world_size(spec: StudySpec) -> int:
    """Ranks a run trains on, as the study file describes the launch: [slurm] nodes x gpus_per_node
    when it asks for GPUs or several nodes, else [executor] gpus_per_run (at least one)."""
    if spec.slurm.gpus_per_node or spec.slurm.nodes > 1:
        return spec.slurm.nodes * max(1, spec.slurm.gpus_per_node)
    return max(1, spec.executor.gpus_per_run)


def run_id(*, model: str, dataset: dict[str, Any], data_size: int | None, samples_seen: int, seed: int,
           train: dict[str, Any], world_size: int = 1) -> str:
    """`<model>-<hash>`: sha256 of the canonical JSON of everything that determines the weights.

    Stream-mode batches also depend on the loader workers (each reads its own shards into its own
    shuffle buffer) and the world size, so there (only) those are part of the id; index-mode batches
    are a pure function of (seed, step) whatever the workers and ranks.
    """
    key: dict[str, Any] = {"model": model, "dataset": dataset, "data_size": data_size,
                           "samples_seen": samples_seen, "seed": seed,
                           "train": {k: v for k, v in train.items()
                                     if k not in OPERATIONAL_KEYS and NEUTRAL_KEYS.get(k, k) != v}}
    if train.get("data_mode") == "stream":  # 0 workers (decode in the trainer) streams like 1
        key["stream"] = {"workers": max(1, int(train.get("workers", 1))), "world_size": world_size}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}-{digest[:12]}"


def _all_samples(ds: Any) -> int | None:
    return ds.samples if ds.synth is not None else ds.size


def _model_flops(flops: FlopsFn, model: str, *, where: str) -> tuple[float, float, float | None]:
    try:
        gmacs, mparams, *nonemb = flops(model)
    except ClipscaleError as exc:  # an unknown name: its hint is the study's model_configs, not the flag
        from clipscale.models.registry import STUDY_CUSTOM_HINT, UnknownModelError

        text = exc.text(STUDY_CUSTOM_HINT) if isinstance(exc, UnknownModelError) else str(exc)
        raise ClipscaleError(f"{where}: {text}") from None
    return gmacs, mparams, (nonemb[0] if nonemb else None)


def shown_path(path: Path) -> str:
    """The study file as errors name it: relative to the working directory when under it (as the study
    file's other errors name it), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


MAX_SAMPLES_SEEN = 10**13  # 300x the paper's largest run (34B): a larger plan is a typo, not a study
MAX_CELLS = 10**7  # beyond this a grid is not a study one can run; plan() refuses it before expanding
PROGRESS_EVERY = 100_000  # cells between progress lines of a big grid


def grid_cells(spec: StudySpec) -> int:
    """How many cells the blocks expand to (duplicates included), without expanding them."""
    return sum(len(b.model) * len(b.dataset) * len(b.data_size) * (len(b.samples_seen) + len(b.compute))
               * len(b.seed) for b in spec.grid)


def plan(spec: StudySpec, *, flops: FlopsFn | None = None,
         progress: Callable[[str], None] | None = None) -> list[RunPlan]:
    """Every run of the study in grid order, duplicates (same id from several blocks) removed.

    Per-model FLOPs and each distinct (model, samples seen, settings) TrainConfig check are computed once,
    so a 10^6-cell grid plans in seconds; `progress` gets a line every PROGRESS_EVERY cells.
    """
    flops = flops or default_flops
    total = grid_cells(spec)
    if total > MAX_CELLS:
        raise ClipscaleError(f"{shown_path(spec.path)}: [[grid]] expands to {total:,} cells, more than "
                             f"{MAX_CELLS:,}; split the study")
    cache: dict[str, tuple[float, float, float | None]] = {}
    checked: dict[str, dict[str, Any]] = {}  # settings -> one shared train dict (memory of big grids)
    used = [False] * len(spec.rules)
    runs: dict[str, RunPlan] = {}
    done = 0
    for number, block in enumerate(spec.grid, 1):
        where = f"{shown_path(spec.path)}: [[grid]] #{number}"
        budgets = [("samples", s) for s in block.samples_seen] + [("compute", c) for c in block.compute]
        sizes = block.data_size or (None,)  # None: each dataset's own samples
        for model, ds_name, size, (kind, budget), seed in itertools.product(
                block.model, block.dataset, sizes, budgets, block.seed):
            data_size = size if size is not None else _all_samples(spec.datasets[ds_name])
            if model not in cache:
                cache[model] = _model_flops(flops, model, where=f"{where} model")
            gmacs, mparams, nonemb = cache[model]
            cell = {"model": model, "dataset": ds_name, "data_size": data_size, "seed": seed}
            train = resolve_train(spec, cell, used=used)
            batch = _batch_size(train)
            samples = int(budget) if kind == "samples" else _samples_for(budget, gmacs, batch)
            _check_samples(where, kind, budget, samples, train)
            samples = _whole_batches(where, samples, batch)
            if "warmup_fraction" in train:
                train["warmup"] = round(train.pop("warmup_fraction") * samples)
            settings = json.dumps([model, samples, train], sort_keys=True, default=str)
            if settings not in checked:
                _validate_train(model, samples, train)
                checked[settings] = train
            train = checked[settings]
            ds = spec.datasets[ds_name]
            rid = run_id(model=model, dataset=ds.identity(), data_size=data_size, samples_seen=samples,
                         seed=seed, train=train, world_size=stream_world_size(spec))
            runs.setdefault(rid, RunPlan(
                run_id=rid, model=model, dataset=ds_name, distribution=ds.synth or ds_name,
                data_size=data_size, samples_seen=samples, seed=seed, gmacs=gmacs, mparams=mparams,
                train=train, compute_group=budget if kind == "compute" else None,
                run_dir=spec.runs_dir / rid, mparams_nonemb=nonemb))
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(f"planning: {done:,} of {total:,} cells")
    _check_rules_used(spec, used)
    return list(runs.values())


def _check_samples(where: str, kind: str, budget: float, samples: int, train: dict[str, Any]) -> None:
    """A run trains whole batches: a batch larger than its samples seen would train more than planned
    (status and results would disagree); an astronomically large budget is a typo."""
    key = "samples_seen" if kind == "samples" else "compute"
    if samples > MAX_SAMPLES_SEEN:
        raise ClipscaleError(f"{where} {key}: {budget:.4g} plans {samples:.3g} samples seen, more than "
                             f"{MAX_SAMPLES_SEEN:.0e}")
    batch = train.get("batch_size")
    if isinstance(batch, int) and batch > samples:
        raise ClipscaleError(f"{where} {key}: {samples} samples seen is less than one batch "
                             f"([train] batch_size = {batch}); lower batch_size or raise samples_seen")


def _check_rules_used(spec: StudySpec, used: list[bool]) -> None:
    """A [[rules]] entry whose `when` matches no cell is a typo (a model or dataset misspelt)."""
    for i, hit in enumerate(used):
        if not hit:
            raise ClipscaleError(f"{shown_path(spec.path)}: [[rules]] #{i + 1} when = {spec.rules[i].when}: "
                                 "matches no grid cell (check the names against [[grid]])")


def text_table(header: list[str], rows: list[list[str]], *, right: tuple[int, ...]) -> list[str]:
    """Lines of a plain-text table whose columns are as wide as their widest cell (run ids and model
    names vary in length: `tiny-S0-bpe-...` shifted fixed-width columns); `right`: right-aligned columns."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return " ".join(c.rjust(w) if i in right else c.ljust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return [line(header), *(line(r) for r in rows)]


def format_plan(runs: list[RunPlan]) -> str:
    """The `--dry-run` table: one line per run with its compute, then the total."""
    rows = [[r.run_id, r.model, r.dataset, "?" if r.data_size is None else f"{r.data_size:,}",
             f"{r.samples_seen:,}", f"{r.gmacs:.4g}", f"{r.compute:.4g}"] for r in runs]
    lines = text_table(["run_id", "model", "dataset", "data", "samples", "GMACs", "compute"], rows,
                       right=(3, 4, 5, 6))
    total = sum(r.compute for r in runs)
    lines.append(f"{len(runs)} runs, total compute {total:.4g} GMACs "
                 f"({6e9 * total:.3g} training FLOPs)")
    return "\n".join(lines)
