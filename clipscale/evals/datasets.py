"""Eval datasets: one in-memory description (`EvalDataset`) that every task reads, built by adapters.

An `EvalDataset` holds *references* to images (file path, or byte range inside a tar) rather than
decoded pixels, so a 50k-image set costs a few MB until it is encoded, and each image is read once
per checkpoint by `embed`. Its `fingerprint` is a content hash of every source file (images, tars,
annotations) so a cached embedding can never be reused after the data changed.

Adapters (`load_dataset(fmt=...)`): CLIP_benchmark's local webdataset directory ("wds"; the synthetic
sets use it too, "synth"), an ImageFolder tree ("imagefolder"), CSV/JSON (image, caption) pairs
("pairs") and COCO caption JSON ("coco") live in `adapters.py`. Validation that every adapter
shares (non-empty, labels in range, captions per image) lives here, with errors naming the file.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipscale.errors import ClipscaleError

KINDS = ("classification", "multilabel", "retrieval")


@dataclass(frozen=True)
class ImageRef:
    """Where one image's encoded bytes live: a whole file, or `size` bytes at `offset` in a tar."""

    path: str
    offset: int = -1
    size: int = -1

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.offset < 0:
                return f.read()
            f.seek(self.offset)
            return f.read(self.size)


@dataclass
class EvalDataset:
    """A labelled or captioned image set, validated on construction (errors name `source`)."""

    name: str
    kind: str
    source: Path
    images: list[ImageRef]
    fingerprint: str
    labels: np.ndarray | None = None  # (N,) int class ids, or (N, C) multi-hot for multilabel
    captions: list[list[str]] | None = None  # retrieval: captions of each image
    classnames: list[str] | None = None
    templates: list[str] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    train: EvalDataset | None = None  # the training split, attached for probes and fine-tuning
    lost: int = 0  # samples of the source that could not be read (cut off by a truncated tar shard)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ClipscaleError(f"{self.source}: dataset type {self.kind!r}; expected one of {KINDS}")
        if not self.images:
            raise ClipscaleError(f"{self.source}: dataset {self.name!r} has no samples")
        if self.kind == "retrieval":
            self._check_captions()
        else:
            self._check_labels()

    def __len__(self) -> int:
        return len(self.images)

    def _check_captions(self) -> None:
        if self.captions is None or len(self.captions) != len(self.images):
            n = 0 if self.captions is None else len(self.captions)
            raise ClipscaleError(f"{self.source}: {len(self.images)} images but captions for {n}")
        for i, caps in enumerate(self.captions):
            if not caps or any(not c.strip() for c in caps):
                raise ClipscaleError(f"{self.source}: image {self.images[i].path} has an empty caption list")

    def _check_labels(self) -> None:
        if self.labels is None or len(self.labels) != len(self.images):
            raise ClipscaleError(f"{self.source}: every image needs a label")
        if self.classnames is None:
            return  # checked by tasks that need class names (zero-shot); probes use label ids only
        n = len(self.classnames)
        labels = np.asarray(self.labels)
        if self.kind == "multilabel":
            if labels.ndim != 2 or labels.shape[1] != n:
                raise ClipscaleError(f"{self.source}: multi-label targets have shape {labels.shape}; "
                                     f"expected (N, {n}) for {n} class names")
            return
        bad = np.flatnonzero((labels < 0) | (labels >= n))
        if bad.size:
            raise ClipscaleError(f"{self.source}: label id {int(labels[bad[0]])} of sample {int(bad[0])} "
                                 f"is outside the {n} class names (0..{n - 1})")

    def require_zeroshot(self) -> tuple[list[str], list[str]]:
        """Class names and templates, or an error naming the dataset (zero-shot needs both)."""
        if self.kind == "retrieval":
            raise ClipscaleError(f"{self.source}: a retrieval dataset; zero-shot classification needs labels")
        if not self.classnames:
            raise ClipscaleError(f"{self.source}: no class names (add classnames.txt or a 'classnames' file)")
        if not self.templates:
            raise ClipscaleError(f"{self.source}: no zero-shot templates "
                                 "(add zeroshot_classification_templates.txt or a 'templates' file)")
        return self.classnames, self.templates

    def require_train(self, task: str) -> EvalDataset:
        """The attached training split of a single-label set (probes and fine-tuning need one)."""
        if self.kind != "classification" or self.labels is None:
            raise ClipscaleError(f"{self.source}: {task} needs a single-label classification dataset")
        if self.train is None or self.train.labels is None:
            raise ClipscaleError(f"{self.source}: {task} needs a labelled train split")
        return self.train

    def num_classes(self) -> int:
        if self.classnames:
            return len(self.classnames)
        if self.labels is None:
            raise ClipscaleError(f"{self.source}: dataset {self.name!r} has no labels")
        return int(np.asarray(self.labels).max()) + 1


def read_lines(path: Path, what: str) -> list[str]:
    """One entry per line (stripped, as CLIP_benchmark reads them); blank lines only at the end."""
    if not path.is_file():
        raise ClipscaleError(f"{path}: {what} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ClipscaleError(f"{path}: {what} file is not UTF-8 text (byte {exc.start}: "
                             f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ClipscaleError(f"{path}: {what} file is empty")
    for i, line in enumerate(lines):
        if not line:
            raise ClipscaleError(f"{path}: line {i + 1} is blank; expected one {what} entry per line")
    return lines


class ContentHasher:
    """sha256 over file contents and structure; the dataset half of the embedding-cache key."""

    def __init__(self, kind: str) -> None:
        self._h = hashlib.sha256(f"clipscale-dataset-v1|{kind}|".encode())

    def file(self, path: Path) -> None:
        self._h.update(f"file|{path.name}|".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                self._h.update(chunk)

    def text(self, value: str) -> None:
        self._h.update(f"text|{len(value)}|{value}".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def template_problem(template: str) -> str | None:
    """Why a zero-shot template is unusable, or None. CLIP_benchmark formats `template.format(c=name)`;
    only the bare field `{c}` (at least once) is accepted: a `{}`, `{0}`, `{other}`, `{c!r}`, `{c:>9}` or
    `{c.attr}` would fail or, worse, give every class the same prompt; `{{`/`}}` are literal braces."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"unbalanced braces ({exc}); write a literal brace as '{{{{' or '}}}}'"
    for name, spec, conv in fields:
        if name != "c" or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            return f"field {shown!r}: only '{{c}}' (the class name) is allowed"
    if not fields:
        return "no '{c}' field: every class would get the same prompt"
    return None


def check_templates(path: str | Path, templates: list[str]) -> None:
    """One line naming the file and the first unusable template (see `template_problem`)."""
    for i, t in enumerate(templates):
        problem = template_problem(t)
        if problem:
            raise ClipscaleError(f"{path}: template on line {i + 1} {t!r}: {problem}")

