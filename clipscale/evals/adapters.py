"""Dataset adapters: local files in the layouts people already have -> `EvalDataset`.

The wds reader follows CLIP_benchmark's `build_wds_dataset` (datasets/builder.py): `<dir>/<split>/
nshards.txt`, shards `0.tar..N-1.tar`, samples grouped by key (file name up to the first dot), image
from the first of webp/png/jpg/jpeg, label from `.cls` (or `.npy` multi-hot when dataset_type.txt says
multilabel), captions from `.txt` split into lines. It uses the stdlib tarfile, not webdataset,
because it records byte offsets (lazy, random-access image reads) instead of streaming decoded
samples, which lets one pass both hash and index the shards.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError
from clipscale.evals.datasets import ContentHasher, EvalDataset, ImageRef, read_lines

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's wds order of preference
FOLDER_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
FORMATS = ("wds", "synth", "imagefolder", "pairs", "coco")
CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"


def _optional_lines(default: Path, given: Path | None, what: str) -> list[str] | None:
    if given is not None:
        return read_lines(given, what)
    return read_lines(default, what) if default.is_file() else None


def _wds_members(tar_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """[(key, {ext: ImageRef | bytes})] in tar order; image parts as references, others as bytes."""
    samples: list[tuple[str, dict[str, Any]]] = []
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot:
                    continue
                key = f"{directory}/{stem}" if directory else stem
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                ext = ext.lower()
                if ext in IMAGE_EXTS:
                    samples[-1][1][ext] = ImageRef(str(tar_path), member.offset_data, member.size)
                elif ext in ("cls", "txt", "npy"):
                    f = tar.extractfile(member)
                    samples[-1][1][ext] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError) as exc:
        raise ClipscaleError(f"{tar_path}: not a readable tar shard ({exc})") from None
    return samples


def _wds_label(tar_path: Path, key: str, parts: dict[str, Any], kind: str) -> Any:
    ext = {"classification": "cls", "multilabel": "npy", "retrieval": "txt"}[kind]
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


def load_wds(path: Path, *, name: str, split: str = "test", classnames: Path | None = None,
             templates: Path | None = None) -> EvalDataset:
    nshards_file = path / split / "nshards.txt"
    if not nshards_file.is_file():
        raise ClipscaleError(f"{nshards_file}: not found; expected a CLIP_benchmark wds directory "
                             f"with split {split!r}")
    try:
        nshards = int(nshards_file.read_text().strip())
    except ValueError:
        raise ClipscaleError(f"{nshards_file}: expected the number of shards as an integer") from None
    type_file = path / "dataset_type.txt"
    kind = type_file.read_text().strip().lower() if type_file.is_file() else "classification"
    hasher = ContentHasher(f"wds|{kind}")
    images: list[ImageRef] = []
    targets: list[Any] = []
    for shard in range(nshards):
        tar_path = path / split / f"{shard}.tar"
        if not tar_path.is_file():
            raise ClipscaleError(f"{tar_path}: shard missing ({nshards_file} says {nshards} shards)")
        hasher.file(tar_path)
        for key, parts in _wds_members(tar_path):
            image_ext = next((e for e in IMAGE_EXTS if e in parts), None)
            if image_ext is None:
                raise ClipscaleError(f"{tar_path}: sample {key!r} has no image ({'/'.join(IMAGE_EXTS)})")
            images.append(parts[image_ext])
            targets.append(_wds_label(tar_path, key, parts, kind))
    if kind == "retrieval":
        return EvalDataset(name, kind, path, images, hasher.hexdigest(), captions=targets)
    labels = np.stack(targets) if kind == "multilabel" else np.asarray(targets, dtype=np.int64)
    return EvalDataset(name, kind, path, images, hasher.hexdigest(), labels=labels,
                       classnames=_optional_lines(path / CLASSNAMES_FILE, classnames, "class names"),
                       templates=_optional_lines(path / TEMPLATES_FILE, templates, "templates"))


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
                 image_root: str | Path | None = None) -> EvalDataset:
    """Build an `EvalDataset` from local files; unknown format -> error listing the valid ones."""
    path = Path(path)
    cls_file = Path(classnames) if classnames else None
    tpl_file = Path(templates) if templates else None
    root = Path(image_root) if image_root else None
    if fmt in ("wds", "synth"):
        return load_wds(path, name=name, split=split, classnames=cls_file, templates=tpl_file)
    if fmt == "imagefolder":
        return load_imagefolder(path, name=name, split=split, classnames=cls_file, templates=tpl_file)
    if fmt == "pairs":
        return load_pairs(path, name=name, image_root=root)
    if fmt == "coco":
        return load_coco(path, name=name, image_root=root)
    raise ClipscaleError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(FORMATS)}")
