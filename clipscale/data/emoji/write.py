"""Writers: training shards, CLIP_benchmark eval sets, the suite file and the manifest.

Formats are the ones clipscale already reads, so nothing here needs a new reader:
- training shards: img2dataset/webdataset tars (`{key}.png`, `{key}.txt`, `{key}.json`), read by
  `data/shard_index.py` through a study's `[datasets.NAME] shards`;
- eval sets: CLIP_benchmark's local wds layout (see `data/synth/evalsets.py`), read by
  `evals/adapters.py`; `.cls` holds the class index, `.txt` the retrieval captions, one per line.
Tars use `ShardTarWriter` (fixed mtime/owner/mode) and PNGs the stdlib encoder, so the same
packages give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipscale.data.emoji.concepts import Concept, stable_hash
from clipscale.data.synth.output import ShardTarWriter, png_bytes
from clipscale.io import atomic_write_text

MAX_SHARD_SIZE = 10_000
PNG_LEVEL = 6  # emoji art is flat colour: ~10x smaller than level 0, still fast
CLASSIFICATION_TEMPLATES = ("{c}", "an emoji of {c}", "a picture of {c}")
MANIFEST_COLUMNS = ("style", "concept", "hexcode", "caption", "group", "subgroup", "split", "file", "key")


@dataclass(frozen=True)
class Sample:
    """One (style, concept) image, already resized and PNG-encoded."""

    style: str
    concept: Concept
    png: bytes

    @property
    def key(self) -> str:
        return f"{self.style}_{self.concept.hexcode}"

    def record(self, captions: list[str]) -> dict[str, object]:
        c = self.concept
        return {"key": self.key, "style": self.style, "hexcode": c.hexcode, "name": c.name,
                "captions": captions, "tags": list(c.tags), "group": c.group, "subgroup": c.subgroup,
                "split": c.split}


def encode(image: np.ndarray) -> bytes:
    return png_bytes(image, level=PNG_LEVEL)


def shuffled(samples: Iterable[Sample]) -> list[Sample]:
    """A fixed pseudo-random order (by hash of the key), so the first N samples of a shard list,
    which is what a study's `data_size` takes, are a random subset rather than one emoji group."""
    return sorted(samples, key=lambda s: (stable_hash(f"order|{s.key}"), s.key))


def write_train_shards(folder: Path, samples: list[Sample]) -> dict[str, str]:
    """`folder/00000.tar …`, ≤ MAX_SHARD_SIZE samples each, one caption per sample; key -> shard name."""
    folder.mkdir(parents=True)
    where: dict[str, str] = {}
    for start in range(0, len(samples), MAX_SHARD_SIZE):
        name = f"{start // MAX_SHARD_SIZE:05d}.tar"
        with ShardTarWriter(folder / name) as tar:
            for s in samples[start:start + MAX_SHARD_SIZE]:
                text = s.concept.train_caption(s.style)
                record = {**s.record(s.concept.captions()), "caption": text}
                tar.write(s.key, {"png": s.png, "txt": text.encode(), "json": json.dumps(record).encode()})
                where[s.key] = name
    return where


def _write_test_split(root: Path, entries: list[tuple[Sample, dict[str, bytes]]]) -> None:
    (root / "test").mkdir(parents=True)
    with ShardTarWriter(root / "test" / "0.tar") as tar:
        for sample, files in entries:
            tar.write(sample.key, {"png": sample.png, **files,
                                   "json": json.dumps(sample.record(sample.concept.captions())).encode()})
    atomic_write_text(root / "test" / "nshards.txt", "1\n")


def write_classification_set(root: Path, samples: list[Sample], classnames: list[str]) -> None:
    """Zero-shot classification: each image's label is its concept's index in `classnames`."""
    index = {name: i for i, name in enumerate(classnames)}
    _write_test_split(root, [(s, {"cls": str(index[s.concept.name]).encode()}) for s in samples])
    atomic_write_text(root / "dataset_type.txt", "classification\n")
    atomic_write_text(root / "classnames.txt", "".join(f"{c}\n" for c in classnames))
    atomic_write_text(root / "zeroshot_classification_templates.txt",
                      "".join(f"{t}\n" for t in CLASSIFICATION_TEMPLATES))


def write_retrieval_set(root: Path, samples: list[Sample]) -> None:
    """Zero-shot retrieval: each image with all its concept's caption variants, one per line."""
    _write_test_split(root, [(s, {"txt": "\n".join(s.concept.captions()).encode()}) for s in samples])
    atomic_write_text(root / "dataset_type.txt", "retrieval\n")


def suite_text(sets: list[tuple[str, str]]) -> str:
    """The suite file for the eval sets ((name, task) pairs); paths relative to the output folder."""
    lines = ["# Written by `clipscale data emoji`: zero-shot classification and retrieval on the concepts",
             "# held out of training. Paths resolve against [eval] data_root when a study sets it (set it",
             "# to this folder), else against this file's folder. Use in a study:",
             '#   [eval]  suite = "<this folder>/emoji_suite.toml"  data_root = "<this folder>"',
             "# or: clipscale eval RUN_DIR --suite <this folder>/emoji_suite.toml",
             'name = "emoji"', ""]
    for name, task in sets:
        lines += ["[[dataset]]", f'name = "{name}"', 'format = "wds"', f'path = "eval/{name}"',
                  f'task = "{task}"', ""]
    return "\n".join(lines + _aggregate_lines(sets))


# Averages over the styles built (the paper's aggregate targets): one law for "retrieval on every style"
AGGREGATES = (("emoji_retrieval", "zeroshot_retrieval", "image_retrieval_recall@5"),
              ("emoji_classification", "zeroshot_classification", "acc1"))


def _aggregate_lines(sets: list[tuple[str, str]]) -> list[str]:
    lines = []
    for name, task, metric in AGGREGATES:
        parts = [n for n, t in sets if t == task]
        if len(parts) > 1:
            lines += ["[[aggregate]]  # the mean over the styles", f'name = "{name}"', f'metric = "{metric}"',
                      "of = [" + ", ".join(f'"{p}"' for p in parts) + "]", ""]
    return lines


def manifest_text(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def manifest_rows(style: str, samples: list[Sample], files: dict[str, str], *,
                  unseen: bool) -> list[dict[str, str]]:
    """One row per image-caption pair: a training image's caption, or each retrieval caption.

    `files`: key -> the tar (relative to the output folder) holding the sample.
    """
    rows = []
    for s in samples:
        c = s.concept
        captions = c.captions() if unseen else [c.train_caption(style)]
        for text in captions:
            rows.append({"style": style, "concept": c.name, "hexcode": c.hexcode, "caption": text,
                         "group": c.group, "subgroup": c.subgroup, "split": c.split, "file": files[s.key],
                         "key": s.key})
    return rows
