"""Evaluation sets in CLIP_benchmark's local webdataset ("wds/") layout, one directory per task.

Layout, as read by clip_benchmark/datasets/builder.py `build_wds_dataset` (LAION-AI/CLIP_benchmark):

    DIR/<task>/test/nshards.txt        number of shards N, e.g. "1\\n"; shards are named 0.tar .. N-1.tar
    DIR/<task>/test/0.tar              samples `s0000000.png` (decoded for extensions webp/png/jpg/jpeg)
                                       + `s0000000.cls` (ASCII class index; webdataset decodes it to int)
                                       or `s0000000.txt` (retrieval: captions joined by "\\n", read with
                                       str.splitlines) + `s0000000.json` (our scene record; ignored there)
    DIR/<task>/classnames.txt          one class name per line (classification)
    DIR/<task>/zeroshot_classification_templates.txt   one template per line, class name as "{c}"
    DIR/<task>/dataset_type.txt        "classification" or "retrieval" (missing means classification)

so `clip_benchmark eval --dataset wds/synth_shape --dataset_root DIR/synth_shape --split test` reads
it (retrieval needs `--task zeroshot_retrieval`: CLIP_benchmark picks the task from the dataset name).

Classification tasks also get a `train/` split (same layout) for linear probes and fine-tuning,
drawn from stream [2000 + t, s, i], so probe training never sees a test image.

Held out by construction: training sample i of seed s is drawn from the numpy seed sequence
[0, s, i]; eval task t uses [1000 + t, s, i], a disjoint stream, so no eval scene repeats a training
draw (each image also carries independent per-pixel noise; a test checks no eval image equals a
training image). Labels are balanced (class = index mod number of classes); the distribution only
sets the attributes that are not the label. Retrieval images have 5 distinct rich-style captions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipscale.data.synth.captions import caption
from clipscale.data.synth.distributions import RICH, Distribution
from clipscale.data.synth.output import ShardTarWriter, atomic_output_dir, png_bytes
from clipscale.data.synth.scene import SceneObject, objects_to_json, render, sample_objects, sample_rng
from clipscale.data.synth.shapes import COLOR_NAMES, GRID, SHAPES
from clipscale.data.synth.train_shards import (
    GENERATOR_VERSION,
    MAX_SHARD_SIZE,
    check_common,
    check_positive_int,
)
from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_json, atomic_write_text

SPLIT = "test"
TRAIN_SPLIT = "train"
TRAIN_STREAM_OFFSET = 1000  # train split of task stream 1000 + t uses 2000 + t
CAPTIONS_PER_IMAGE = 5
RELATIONS = ("above", "below", "to the left of", "to the right of")

Scene = tuple[list[SceneObject], int]
Maker = Callable[[np.random.Generator, int, Distribution, int], Scene]


def _shape(rng: np.random.Generator, label: int, dist: Distribution, size: int) -> Scene:
    return sample_objects(rng, dist, size, n=1, overrides=[{"shape": SHAPES[label]}]), label


def _color(rng: np.random.Generator, label: int, dist: Distribution, size: int) -> Scene:
    return sample_objects(rng, dist, size, n=1, overrides=[{"color": COLOR_NAMES[label]}]), label


def _count(rng: np.random.Generator, label: int, dist: Distribution, size: int) -> Scene:
    return sample_objects(rng, dist, size, n=label + 1), label


def _relation(rng: np.random.Generator, label: int, dist: Distribution, size: int) -> Scene:
    """A red and a blue object in one column (above/below) or one row (left/right): unambiguous."""
    line = int(rng.integers(GRID))
    first, second = sorted(int(v) for v in rng.permutation(GRID)[:2])
    if RELATIONS[label] == "below" or RELATIONS[label] == "to the right of":
        first, second = second, first
    if label < 2:  # same column, red in row `first`
        cells = [first * GRID + line, second * GRID + line]
    else:  # same row, red in column `first`
        cells = [line * GRID + first, line * GRID + second]
    colors = [{"color": "red"}, {"color": "blue"}]
    objects = sample_objects(rng, dist, size, n=2, cells=cells, overrides=colors)
    return objects, label


@dataclass(frozen=True)
class EvalTask:
    name: str
    stream: int  # numpy seed-sequence stream; never 0 (training) and never reused
    kind: str  # "classification" or "retrieval"
    classnames: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    make: Maker | None = None


TASKS: tuple[EvalTask, ...] = (
    EvalTask("synth_shape", 1000, "classification", SHAPES,
             ("a photo of the {c}", "the {c}", "an image with one {c}", "a picture of a single {c}"), _shape),
    EvalTask("synth_color", 1001, "classification", COLOR_NAMES,
             ("a photo of the {c} shape", "the {c} object", "an image with one {c} thing", "{c}"), _color),
    EvalTask("synth_count", 1002, "classification",
             ("one shape", "two shapes", "three shapes", "four shapes"),
             ("{c}", "a photo of {c}", "an image with {c}", "a picture showing {c}"), _count),
    EvalTask("synth_relation", 1003, "classification",
             tuple(f"a red shape {r} a blue shape" for r in RELATIONS),
             ("{c}", "a photo of {c}", "an image showing {c}", "a picture of {c}"), _relation),
    EvalTask("synth_retrieval", 1004, "retrieval"),
)


def list_eval_tasks() -> list[str]:
    return [t.name for t in TASKS]


def _retrieval_captions(rng: np.random.Generator, objects: list[SceneObject]) -> list[str]:
    captions: list[str] = []
    for _ in range(20 * CAPTIONS_PER_IMAGE):
        text = caption(rng, objects, RICH)
        if text not in captions:
            captions.append(text)
        if len(captions) == CAPTIONS_PER_IMAGE:
            break
    return captions


def eval_sample(task: EvalTask, seed: int, index: int, image_size: int, dist: Distribution,
                stream: int | None = None) -> tuple[str, dict[str, bytes]]:
    rng = sample_rng(seed, index, task.stream if stream is None else stream)
    key = f"s{index:07d}"
    record: dict[str, Any] = {"key": key, "task": task.name, "index": index, "seed": seed}
    if task.kind == "retrieval":
        objects = sample_objects(rng, dist, image_size)
        captions = _retrieval_captions(rng, objects)
        files = {"txt": "\n".join(captions).encode()}
        record["captions"] = captions
    else:
        assert task.make is not None
        objects, label = task.make(rng, index % len(task.classnames), dist, image_size)
        files = {"cls": str(label).encode()}
        record.update(label=label, classname=task.classnames[label])
    record["objects"] = objects_to_json(objects)
    image = render(rng, objects, image_size)
    return key, {"png": png_bytes(image), **files, "json": json.dumps(record).encode()}


def _write_split(root: Path, split: str, task: EvalTask, *, seed: int, image_size: int, samples: int,
                 dist: Distribution, stream: int) -> int:
    (root / split).mkdir(parents=True)
    nshards = (samples + MAX_SHARD_SIZE - 1) // MAX_SHARD_SIZE
    for shard in range(nshards):
        with ShardTarWriter(root / split / f"{shard}.tar") as tar:
            for index in range(shard * MAX_SHARD_SIZE, min((shard + 1) * MAX_SHARD_SIZE, samples)):
                tar.write(*eval_sample(task, seed, index, image_size, dist, stream))
    atomic_write_text(root / split / "nshards.txt", f"{nshards}\n")
    return nshards


def _write_task(root: Path, task: EvalTask, *, seed: int, image_size: int, samples: int,
                train_samples: int, dist: Distribution) -> int:
    nshards = _write_split(root, SPLIT, task, seed=seed, image_size=image_size, samples=samples,
                           dist=dist, stream=task.stream)
    if task.kind == "classification" and train_samples > 0:
        _write_split(root, TRAIN_SPLIT, task, seed=seed, image_size=image_size, samples=train_samples,
                     dist=dist, stream=task.stream + TRAIN_STREAM_OFFSET)
    atomic_write_text(root / "dataset_type.txt", f"{task.kind}\n")
    if task.kind == "classification":
        atomic_write_text(root / "classnames.txt", "".join(f"{c}\n" for c in task.classnames))
        templates = "".join(f"{t}\n" for t in task.templates)
        atomic_write_text(root / "zeroshot_classification_templates.txt", templates)
    return nshards


def write_eval_sets(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 32,
    samples_per_task: int = 1000,
    train_samples_per_task: int | None = None,
    distribution: str = "uniform",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write every eval task under `out_dir/<task>/` (all or nothing) and return DIR/meta.json.

    Classification tasks get a `train` split of `train_samples_per_task` samples (default: as many
    as the test split; 0 for none) for linear probes and fine-tuning.
    """
    check_positive_int("samples_per_task", samples_per_task)
    train_samples = samples_per_task if train_samples_per_task is None else train_samples_per_task
    if train_samples != 0:
        check_positive_int("train_samples_per_task", train_samples)
    dist = check_common(seed=seed, image_size=image_size, distribution=distribution)
    tasks: dict[str, Any] = {}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        try:
            for task in TASKS:
                nshards = _write_task(tmp / task.name, task, seed=seed, image_size=image_size,
                                      samples=samples_per_task, train_samples=train_samples, dist=dist)
                has_train = task.kind == "classification" and train_samples > 0
                tasks[task.name] = {"type": task.kind, "samples": samples_per_task, "nshards": nshards,
                                    "classes": len(task.classnames), "split": SPLIT,
                                    "train_samples": train_samples if has_train else 0}
        except OSError as exc:
            raise ClipscaleError(f"{out_dir}: writing eval sets failed ({exc.strerror or exc})") from None
        meta = {"format": "clip_benchmark_wds", "generator_version": GENERATOR_VERSION, "seed": seed,
                "image_size": image_size, "distribution": distribution, "samples_per_task": samples_per_task,
                "tasks": tasks}
        atomic_write_json(tmp / "meta.json", meta)
    return meta
