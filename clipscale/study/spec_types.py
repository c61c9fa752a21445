"""The study spec's types: the typed, frozen sections a study file becomes (`spec.py` parses and
validates them) and the key sets both share. Kept apart from the parser so readers of a spec (grid,
runner, report, confighelp) see the data without the parsing rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.confighelp import doc_field
from clipscale.errors import ClipscaleError
from clipscale.train.config import FIELD_NAMES as TRAIN_FIELDS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# TrainConfig fields a study may set in [train] or through a rule (plus warmup_fraction of samples
# seen); the grid owns model/data/samples/seed and the runner owns paths, resume and evaluation.
STUDY_OWNED = ("model", "train_data", "output_dir", "data_size", "samples_seen", "seed", "resume",
               "eval_suite", "eval_data_root", "model_configs")
TRAIN_KEYS = (*(k for k in TRAIN_FIELDS if k not in STUDY_OWNED), "warmup_fraction")
# Keys that change nothing about the trained weights: excluded from the run id. model_configs: [study]
# paths, passed to every run's TrainConfig; keep_latest: whether a finished run keeps latest.pt.
OPERATIONAL_KEYS = ("device", "workers", "threads", "log_every", "tensorboard", "report_to", "progress",
                    "peak_tflops", "keep_latest", "model_configs")
GRID_AXES = ("model", "dataset", "data_size", "samples_seen", "compute", "seed")
RULE_MATCH_KEYS = ("model", "dataset", "data_size", "seed")
FIT_FRONTIERS = ("none", "cherti", "pareto", "hull")
FIT_N_COLUMNS = ("params_nonemb", "params")  # results-table column that is N ([fit] n_column)
FIT_CONSTRAINED = ("exclude", "include")
DEFAULT_METRICS = ("image_retrieval_recall@5",)
USR2_BEFORE_LIMIT_S = 90  # submitit's --signal=USR2@90: the job checkpoints and requeues on it
MIN_TIME_MIN = 3  # 180 s - 90 s warning - up to 30 s until SLURM checks limits: at least ~1 minute to train


@dataclass(frozen=True)
class DatasetSpec:
    """A training dataset: built-in synthetic shards (generated on demand) or existing shards."""

    name: str
    synth: str | None = None
    samples: int = 0
    seed: int = 0
    image_size: int = 32
    shards: str | None = None
    size: int | None = None  # shards: the complete samples they hold (counted at load); None: not here

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
    data_size: tuple[int, ...]  # () = each dataset's samples (synth: `samples`; shards: what they hold)
    samples_seen: tuple[int, ...] = ()
    compute: tuple[float, ...] = ()
    seed: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Rule:
    when: dict[str, Any]
    set: dict[str, Any]


@dataclass(frozen=True)
class EvalSpec:
    suite: str = doc_field("synth", help="suite file (relative to the study file) or built-in suite name; "
                           "see docs/suites.md")
    data_root: str | None = doc_field(None, help="where the suite's relative dataset paths resolve; none = "
                                      "generate the synthetic eval sets into OUT/data/")
    batch_size: int = doc_field(256, help="images (or captions) encoded per forward pass")
    samples_per_task: int = doc_field(1000, help="images per generated synthetic eval set (without "
                                      "data_root)")


FIT_OBJECTIVES = ("huber-log", "squares-log", "squares")  # clipscale.fit.estimation.objective.OBJECTIVES


@dataclass(frozen=True)
class FitSpec:
    metrics: tuple[str, ...] = doc_field(DEFAULT_METRICS, help="metric columns to fit (accuracy-like: the "
                                         "law is of 1 - metric)")
    laws: tuple[str, ...] = doc_field(("frontier",), help="laws of `clipscale fit --law` to fit per metric "
                                      "and distribution")
    bootstrap: int = doc_field(200, help="bootstrap refits for confidence intervals (0 = none)")
    predict_compute: tuple[float, ...] = doc_field((), help="compute values (GMACs) to predict the error at "
                                                   "in fits.json and the report")
    frontier: str = doc_field("none", choices=FIT_FRONTIERS, help="how points are thinned before fitting "
                              "(law frontier is power on the cherti frontier)")
    max_passes: float = doc_field(10.0, help="runs with more passes over their unique data (samples_seen / "
                                  "data_size) are left out of laws of compute alone and of the isoFLOP "
                                  "analysis; inf keeps every run")
    constrained: str | None = doc_field(None, choices=FIT_CONSTRAINED, help="old spelling of "
                                        "max_passes: exclude = 10, include = inf")
    check_largest: bool = doc_field(True, help="refit each law without the largest compute group and check "
                                    "that it predicts it (fits.json extrapolation_check)")
    fix: dict[str, float] = doc_field(factory=dict, help="parameters held fixed in every law that has them "
                                      "(`clipscale fit --fix`), e.g. {alpha = -0.1}")
    link: str = doc_field("error", help="scale the law of an error is fitted on: auto, error, neglog, odds "
                          "or boxcox:LAM (`clipscale fit --link`)")
    objective: str = doc_field("huber-log", choices=FIT_OBJECTIVES, help="what the fits minimise "
                               "(`clipscale fit --objective`)")
    n_column: str = doc_field("params_nonemb", choices=FIT_N_COLUMNS, help="model size N of laws and the "
                              "isoFLOP analysis: parameters without embeddings, or all")


@dataclass(frozen=True)
class ExecutorSpec:
    jobs: int = doc_field(1, help="runs trained at once by `--executor local`")
    threads_per_job: int = doc_field(0, help="torch threads per run; 0 = cores divided evenly among jobs")
    gpus_per_run: int = doc_field(0, help="local GPUs per run; > 1 launches the run with torchrun")


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = doc_field(None, help="sbatch --partition")
    nodes: int = doc_field(1, help="nodes per run (one torchrun rank per GPU)")
    gpus_per_node: int = doc_field(0, help="GPUs per node (sbatch --gpus-per-node)")
    cpus_per_task: int = doc_field(8, help="CPU cores per task (sbatch --cpus-per-task)")
    time_min: int = doc_field(60, help="time limit per job in minutes; a timed-out run requeues and resumes")
    mem_gb: int | None = doc_field(None, help="memory per node in GB; none = the partition's default")
    account: str | None = doc_field(None, help="sbatch --account")
    qos: str | None = doc_field(None, help="sbatch --qos")
    constraint: str | None = doc_field(None, help="sbatch --constraint (node features)")
    max_requeue: int = doc_field(3, help="times a preempted or timed-out job is requeued")

    def __post_init__(self) -> None:
        if self.time_min < MIN_TIME_MIN:
            raise ClipscaleError(
                f"[slurm] time_min: {self.time_min} minutes is below the {MIN_TIME_MIN} a job needs to make "
                f"progress: submitit has SLURM send USR2 {USR2_BEFORE_LIMIT_S} s before the limit and SLURM "
                "checks limits about every 30 s, so the job would stop and requeue within seconds of every "
                "start")


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
