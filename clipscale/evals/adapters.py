"""Dataset adapters: local files in the layouts people already have -> `EvalDataset`.

The wds reader follows CLIP_benchmark's `build_wds_dataset` (datasets/builder.py): `<dir>/<split>/
nshards.txt`, shards `0.tar..N-1.tar`, samples grouped by key (file name up to the first dot), image
from the first of webp/png/jpg/jpeg, label from `.cls` (or `.npy` multi-hot when dataset_type.txt says
multilabel; without dataset_type.txt a set declared only for zero-shot retrieval is a retrieval set),
captions from `.txt` split into lines. A shard cut short is read up to the cut and its lost samples
counted (`EvalDataset.lost`, with a warning). It uses the stdlib tarfile, not webdataset,
because it records byte offsets (lazy, random-access image reads) instead of streaming decoded
samples, which lets one pass both hash and index the shards.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.evals.datasets import KINDS, ContentHasher, EvalDataset, ImageRef, read_lines

log = logging.getLogger(__name__)

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's wds order of preference
FOLDER_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
FORMATS = ("wds", "synth", "imagefolder", "pairs", "coco")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
TYPE_FILE = "dataset_type.txt"
LABEL_EXT = {"classification": "cls", "multilabel": "npy", "retrieval": "txt"}


def _optional_lines(default: Path, given: Path | None, what: str) -> list[str] | None:
    if given is not None:
        return read_lines(given, what)
    return read_lines(default, what) if default.is_file() else None


def _clean_end(tar_path: Path, offset: int) -> bool:
    """A tar ends with zero blocks (a cut inside them loses nothing); tarfile also stops silently at a
    header cut short, or at no header at all, as a tar cut between two members is."""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        block = f.read(tarfile.BLOCKSIZE)
    return bool(block) and block == bytes(len(block))


def _wds_members(tar_path: Path) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """[(key, {ext: ImageRef | bytes})] in tar order, image parts as references, others as bytes; and
    where the shard is cut when it is truncated (None when it ends with its end-of-archive blocks).

    A member whose data runs past the end of the file is left out (its sample keeps only the parts
    before it); the caller drops an incomplete last sample."""
    samples: list[tuple[str, dict[str, Any]]] = []
    cut: str | None = None
    last = "its first member"
    try:
        size = tar_path.stat().st_size
        with tarfile.open(tar_path, mode="r:") as tar:
            while True:
                try:
                    member = tar.next()
                except tarfile.ReadError as exc:  # the previous member's padding, or a long-name header, cut
                    cut = f"cut at byte {size}, after {last} ({exc})"
                    break
                if member is None:
                    if not _clean_end(tar_path, tar.offset):
                        cut = f"no whole tar header at byte {tar.offset} of {size}, after {last}"
                    break
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot:
                    continue
                key = f"{directory}/{stem}" if directory else stem
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                if member.offset_data + member.size > size:
                    cut = f"cut at byte {size}, inside {member.name!r}"
                    break
                last = repr(member.name)
                ext = ext.lower()
                if ext in IMAGE_EXTS:
                    samples[-1][1][ext] = ImageRef(str(tar_path), member.offset_data, member.size)
                elif ext in ("cls", "txt", "npy"):
                    f = tar.extractfile(member)
                    samples[-1][1][ext] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise ClipscaleError(f"{tar_path}: not a readable tar shard ({exc})") from None
    return samples, cut


def _declared_count(tar_path: Path) -> int | None:
    """Samples the shard was written with, from img2dataset's `<shard>_stats.json` ("successes");
    CLIP_benchmark's own layout declares no count."""
    stats = tar_path.with_name(f"{tar_path.name.removesuffix('.tar')}_stats.json")
    try:
        count = json.loads(stats.read_text(encoding="utf-8"))["successes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None


def _complete(parts: dict[str, Any], kind: str) -> bool:
    return any(e in parts for e in IMAGE_EXTS) and LABEL_EXT[kind] in parts


def _shard_samples(tar_path: Path, kind: str) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """A shard's samples and how many were lost to truncation (warned once). A sample cut in two is
    dropped unless its image and label are whole. Lost: the declared count (`_stats.json`) minus the
    samples read; without one, 1 (the sample cut in two, or the first one after the cut), a lower
    bound: what followed the cut is gone."""
    samples, cut = _wds_members(tar_path)
    if cut is None:
        return samples, 0
    partial = int(bool(samples) and not _complete(samples[-1][1], kind))
    samples = samples[:len(samples) - partial]
    declared = _declared_count(tar_path)
    lost = max(1, declared - len(samples)) if declared is not None else 1
    why = (f"its {tar_path.stem}_stats.json declares {declared}" if declared is not None
           else f"no {tar_path.stem}_stats.json declares its count, so those after the cut cannot be counted")
    bound = "" if declared is not None else "at least "
    log.warning("%s: truncated (%s): %s%d sample(s) lost, counted as skipped (%s); the %d whole sample(s) "
                "before the cut are evaluated", tar_path, cut, bound, lost, why, len(samples))
    return samples, lost


def _wds_label(tar_path: Path, key: str, parts: dict[str, Any], kind: str) -> Any:
    ext = LABEL_EXT[kind]
    if ext not in parts:
        raise ClipscaleError(f"{tar_path}: sample {key!r} has no .{ext} entry (dataset type {kind})")
    raw = parts[ext]
    try:
        if ext == "cls":
            return int(raw.decode().strip())
        if ext == "npy":
            return np.load(io.BytesIO(raw), allow_pickle=False)
        return raw.decode("utf-8").splitlines()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClipscaleError(f"{tar_path}: sample {key!r} has an unreadable .{ext} entry ({exc})") from None


def wds_kind(path: Path, declared: str | None = None) -> str:
    """The set's type: its dataset_type.txt, else the type its declared tasks read (`declared`: a set
    only evaluated on zero-shot retrieval is a retrieval set), else CLIP_benchmark's default."""
    type_file = path / TYPE_FILE
    if type_file.is_file():
        return type_file.read_text(errors="replace").strip().lower()
    return declared or "classification"


def load_wds(path: Path, *, name: str, split: str = "test", classnames: Path | None = None,
             templates: Path | None = None, declared_kind: str | None = None) -> EvalDataset:
    nshards_file = path / split / "nshards.txt"
    if not nshards_file.is_file():
        raise ClipscaleError(f"{nshards_file}: not found; expected a CLIP_benchmark wds directory "
                             f"with split {split!r}")
    try:
        nshards = int(nshards_file.read_text().strip())
    except ValueError:
        raise ClipscaleError(f"{nshards_file}: expected the number of shards as an integer") from None
    kind = wds_kind(path, declared_kind)
    if kind not in KINDS:
        raise ClipscaleError(f"{path / TYPE_FILE}: dataset type {kind!r}; expected one of {', '.join(KINDS)}")
    hasher = ContentHasher(f"wds|{kind}")
    images: list[ImageRef] = []
    targets: list[Any] = []
    lost = 0
    for shard in range(nshards):
        tar_path = path / split / f"{shard}.tar"
        if not tar_path.is_file():
            raise ClipscaleError(f"{tar_path}: shard missing ({nshards_file} says {nshards} shards)")
        hasher.file(tar_path)
        samples, shard_lost = _shard_samples(tar_path, kind)
        lost += shard_lost
        for key, parts in samples:
            image_ext = next((e for e in IMAGE_EXTS if e in parts), None)
            if image_ext is None:
                raise ClipscaleError(f"{tar_path}: sample {key!r} has no image ({'/'.join(IMAGE_EXTS)})")
            images.append(parts[image_ext])
            targets.append(_wds_label(tar_path, key, parts, kind))
    if kind == "retrieval":
        return EvalDataset(name, kind, path, images, hasher.hexdigest(), captions=targets, lost=lost)
    labels = np.stack(targets) if kind == "multilabel" else np.asarray(targets, dtype=np.int64)
    return EvalDataset(name, kind, path, images, hasher.hexdigest(), labels=labels,
                       classnames=_optional_lines(path / CLASSNAMES_FILE, classnames, "class names"),
                       templates=_optional_lines(path / TEMPLATES_FILE, templates, "templates"), lost=lost)


def load_imagefolder(path: Path, *, name: str, split: str | None = None, classnames: Path | None = None,
                     templates: Path | None = None) -> EvalDataset:
    """torchvision ImageFolder order: sorted class folders, then sorted files within each."""
    root = path / split if split and (path / split).is_dir() else path
    if not root.is_dir():
        raise ClipscaleError(f"{root}: image folder not found")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ClipscaleError(f"{root}: no class folders (expected ROOT/<class>/<image>)")
    names = _optional_lines(path / CLASSNAMES_FILE, classnames, "class names")
    if names is not None and len(names) != len(folders):
        source = classnames or path / CLASSNAMES_FILE
        raise ClipscaleError(f"{source}: {len(names)} class names for {len(folders)} class folders in {root}")
    hasher = ContentHasher("imagefolder")
    images: list[ImageRef] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        for file in sorted((root / folder).rglob("*")):
            if file.is_file() and file.suffix.lower() in FOLDER_EXTS:
                hasher.text(f"{label}|{file.relative_to(root)}")
                hasher.file(file)
                images.append(ImageRef(str(file)))
                labels.append(label)
    return EvalDataset(name, "classification", root, images, hasher.hexdigest(),
                       labels=np.asarray(labels, dtype=np.int64), classnames=names or folders,
                       templates=_optional_lines(path / TEMPLATES_FILE, templates, "templates"))


def _pairs_rows(path: Path) -> list[tuple[str, list[str]]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                raise ClipscaleError(f"{path}: CSV needs columns 'image' and 'caption'; "
                                     f"got {reader.fieldnames}")
            return [(row["image"], [row["caption"]]) for row in reader]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClipscaleError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, list):
        raise ClipscaleError(f"{path}: expected a JSON list of {{'image', 'caption' or 'captions'}}")
    rows = []
    for i, item in enumerate(data):
        caps = item.get("captions", [item["caption"]] if "caption" in item else None) if isinstance(
            item, dict) else None
        if not isinstance(item, dict) or "image" not in item or not isinstance(caps, list):
            raise ClipscaleError(f"{path}: entry {i} needs 'image' and 'caption' (or a 'captions' list)")
        rows.append((str(item["image"]), [str(c) for c in caps]))
    return rows


def _retrieval_set(path: Path, name: str, fmt: str, rows: list[tuple[str, list[str]]],
                   image_root: Path) -> EvalDataset:
    """Group captions by image (first-appearance order); a missing image is a mismatched file."""
    grouped: dict[str, list[str]] = {}
    for image, caps in rows:
        grouped.setdefault(image, []).extend(caps)
    hasher = ContentHasher(fmt)
    images, captions = [], []
    for image, caps in grouped.items():
        file = image_root / image
        if not file.is_file():
            raise ClipscaleError(f"{path}: image {image!r} not found under {image_root}")
        hasher.text(f"{image}|{json.dumps(caps)}")
        hasher.file(file)
        images.append(ImageRef(str(file)))
        captions.append(caps)
    return EvalDataset(name, "retrieval", path, images, hasher.hexdigest(), captions=captions)


def load_pairs(path: Path, *, name: str, image_root: Path | None = None) -> EvalDataset:
    if not path.is_file():
        raise ClipscaleError(f"{path}: caption file not found")
    return _retrieval_set(path, name, "pairs", _pairs_rows(path), image_root or path.parent)


def load_coco(path: Path, *, name: str, image_root: Path | None = None) -> EvalDataset:
    """COCO caption JSON: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        annotations = [(a["image_id"], a["caption"]) for a in data["annotations"]]
    except FileNotFoundError:
        raise ClipscaleError(f"{path}: caption file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ClipscaleError(f"{path}: not COCO caption JSON (images[id, file_name], "
                             f"annotations[image_id, caption]): {exc!r}") from None
    by_image: dict[Any, list[str]] = {i: [] for i in files}
    for image_id, cap in annotations:
        if image_id not in by_image:
            raise ClipscaleError(f"{path}: annotation refers to image id {image_id!r} not in 'images'")
        by_image[image_id].append(str(cap))
    empty = [files[i] for i, caps in by_image.items() if not caps]
    if empty:
        raise ClipscaleError(f"{path}: image {empty[0]!r} has no captions ({len(empty)} such images)")
    rows = [(files[i], caps) for i, caps in by_image.items()]
    return _retrieval_set(path, name, "coco", rows, image_root or path.parent)


def load_dataset(fmt: str, path: str | Path, *, name: str, split: str = "test",
                 classnames: str | Path | None = None, templates: str | Path | None = None,
                 image_root: str | Path | None = None, declared_kind: str | None = None) -> EvalDataset:
    """Build an `EvalDataset` from local files; unknown format -> error listing the valid ones.
    `declared_kind`: a wds set's type when it has no dataset_type.txt (see `wds_kind`)."""
    path = Path(path)
    cls_file = Path(classnames) if classnames else None
    tpl_file = Path(templates) if templates else None
    root = Path(image_root) if image_root else None
    if fmt in ("wds", "synth"):
        return load_wds(path, name=name, split=split, classnames=cls_file, templates=tpl_file,
                        declared_kind=declared_kind)
    if fmt == "imagefolder":
        return load_imagefolder(path, name=name, split=split, classnames=cls_file, templates=tpl_file)
    if fmt == "pairs":
        return load_pairs(path, name=name, image_root=root)
    if fmt == "coco":
        return load_coco(path, name=name, image_root=root)
    raise ClipscaleError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(FORMATS)}")
