"""`clipscale data emoji`: the real captioned-image dataset, from four pinned npm packages to DIR.

    DIR/train/<style>/00000.tar     training shards: train-split concepts only, one caption each
    DIR/train/all/00000.tar         the selected styles' training samples together (2+ styles)
    DIR/eval/emoji_<style>_classification/   zero-shot classification over the held-out concepts' names
    DIR/eval/emoji_<style>_retrieval/        zero-shot retrieval on the held-out concepts (all captions)
    DIR/emoji_suite.toml            the suite for those eval sets
    DIR/manifest.csv                style, concept, hexcode, caption, group, subgroup, split, file, key
    DIR/LICENSES/ATTRIBUTION        art licences and authors, + the packages' licence files
    DIR/meta.json                   counts per style and split, package versions, the rules used

The whole folder appears at once (built in a temporary sibling, then renamed), and the same
packages, styles and image size give byte-identical files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.data.emoji import render as rnd
from clipscale.data.emoji import write as wr
from clipscale.data.emoji.concepts import (
    CAPTION_TEMPLATES,
    SPLIT_SALT,
    STYLE_PACKAGES,
    STYLES,
    TRAIN,
    UNSEEN,
    UNSEEN_FRACTION,
    Concept,
    load_concepts,
    parse_styles,
    style_art,
)
from clipscale.data.emoji.licenses import attribution_text, copy_license_files
from clipscale.data.emoji.packages import NAMES_PACKAGE, Packages, find_packages
from clipscale.data.synth.output import atomic_output_dir
from clipscale.errors import ClipscaleError
from clipscale.io import atomic_write_json, atomic_write_text

FORMAT = "clipscale-emoji/1"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 512
SKIN_TONE_RULE = "dropped"
ALL = "all"
SUITE_FILE = "emoji_suite.toml"
MANIFEST_FILE = "manifest.csv"


@dataclass(frozen=True)
class EmojiBuild:
    """What to build; validated before any package is looked at."""

    out: Path
    styles: tuple[str, ...] = STYLES
    image_size: int = 32
    packages: Path | None = None  # a node_modules folder; None = npm-installed cache
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(parse_styles(self.styles)))
        size = self.image_size
        is_int = isinstance(size, int) and not isinstance(size, bool)
        if not is_int or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
            raise ClipscaleError(f"image_size: expected an integer from {MIN_IMAGE_SIZE} to "
                                 f"{MAX_IMAGE_SIZE}, got {size!r}")

    @property
    def needed_packages(self) -> list[str]:
        return [STYLE_PACKAGES[s] for s in self.styles] + [NAMES_PACKAGE]


@dataclass
class StyleImages:
    """One style's rendered samples and what was left out of them."""

    samples: dict[str, wr.Sample] = field(default_factory=dict)  # hexcode -> sample
    counts: dict[str, int] = field(default_factory=dict)


def _render_style(style: str, packages: Packages, concepts: dict[str, Concept], skins: set[str],
                  size: int) -> StyleImages:
    package = packages.dir(STYLE_PACKAGES[style])
    art = style_art(style, package, concepts, skins)
    if not art.art:
        raise ClipscaleError(f"{package}: no {style} image file matches an emojibase-data concept "
                             f"({art.missing_files} listed files missing; is the package complete?)")
    out = StyleImages(counts=art.counts())
    unreadable = 0
    for code, item in art.art.items():
        try:
            image = rnd.render(item.path, item.kind, size)
        except rnd.UnreadableImage:
            unreadable += 1
            continue
        out.samples[code] = wr.Sample(style, concepts[code], wr.encode(image))
    out.counts["unreadable"] = unreadable
    return out


def _in_order(samples: dict[str, wr.Sample], split: str) -> list[wr.Sample]:
    return sorted((s for s in samples.values() if s.concept.split == split), key=lambda s: s.concept.order)


def _write_all(tmp: Path, cfg: EmojiBuild, images: dict[str, StyleImages], classnames: list[str],
               packages: Packages) -> dict[str, Any]:
    """Everything under the temporary output folder; returns the parts of meta.json it determines."""
    shards: dict[str, list[str]] = {}
    sets: list[tuple[str, str]] = []
    rows: list[dict[str, str]] = []
    for style, imgs in images.items():
        train = wr.shuffled(s for s in imgs.samples.values() if s.concept.split == TRAIN)
        where = wr.write_train_shards(tmp / "train" / style, train)
        shards[style] = sorted(set(where.values()))
        unseen = _in_order(imgs.samples, UNSEEN)
        cls_name, ret_name = f"emoji_{style}_classification", f"emoji_{style}_retrieval"
        wr.write_classification_set(tmp / "eval" / cls_name, unseen, classnames)
        wr.write_retrieval_set(tmp / "eval" / ret_name, unseen)
        sets += [(cls_name, "zeroshot_classification"), (ret_name, "zeroshot_retrieval")]
        rows += wr.manifest_rows(style, sorted(train, key=lambda s: s.concept.order),
                                 {k: f"train/{style}/{n}" for k, n in where.items()}, unseen=False)
        rows += wr.manifest_rows(style, unseen, {s.key: f"eval/{ret_name}/test/0.tar" for s in unseen},
                                 unseen=True)
    if len(images) > 1:
        mixed = wr.shuffled(s for imgs in images.values() for s in imgs.samples.values()
                            if s.concept.split == TRAIN)
        shards[ALL] = sorted(set(wr.write_train_shards(tmp / "train" / ALL, mixed).values()))
    atomic_write_text(tmp / SUITE_FILE, wr.suite_text(sets))
    atomic_write_text(tmp / MANIFEST_FILE, wr.manifest_text(rows))
    (tmp / "LICENSES").mkdir()
    atomic_write_text(tmp / "LICENSES" / "ATTRIBUTION", attribution_text(list(cfg.styles), packages))
    copied = copy_license_files(packages, tmp / "LICENSES")
    return {"train_shards": {k: [f"train/{k}/{n}" for n in v] for k, v in shards.items()},
            "eval_sets": {name: {"task": task, "path": f"eval/{name}"} for name, task in sets},
            "license_files": ["LICENSES/ATTRIBUTION", *(f"LICENSES/{n}" for n in copied)]}


def build_emoji_dataset(
    out: str | os.PathLike,
    *,
    styles: str | tuple[str, ...] | list[str] = STYLES,
    image_size: int = 32,
    packages: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the emoji dataset under `out` (all or nothing) and return its meta.json."""
    cfg = EmojiBuild(Path(out), tuple(parse_styles(styles)), image_size,
                     Path(packages) if packages is not None else None, overwrite)
    renderer = rnd.svg_renderer_version() if "openmoji" in cfg.styles else None  # before any install
    pkgs = find_packages(cfg.packages, cfg.needed_packages)
    concepts, skins = load_concepts(pkgs.dir(NAMES_PACKAGE))
    images = {s: _render_style(s, pkgs, concepts, skins, cfg.image_size) for s in cfg.styles}
    drawn = {code for imgs in images.values() for code in imgs.samples}
    if not drawn:
        raise ClipscaleError(f"{pkgs.root}: no image of the styles {', '.join(cfg.styles)} could be joined "
                             f"to an emojibase concept and read")
    classnames = [c.name for c in sorted((concepts[k] for k in drawn if concepts[k].split == UNSEEN),
                                         key=lambda c: c.order)]
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        try:
            written = _write_all(tmp, cfg, images, classnames, pkgs)
        except OSError as exc:
            raise ClipscaleError(f"{cfg.out}: writing the emoji dataset failed "
                                 f"({exc.strerror or exc})") from None
        meta = _meta(cfg, pkgs, renderer, concepts, drawn, images, classnames, written)
        atomic_write_json(tmp / "meta.json", meta)
    return meta


def _meta(cfg: EmojiBuild, pkgs: Packages, renderer: str | None, concepts: dict[str, Concept],
          drawn: set[str], images: dict[str, StyleImages], classnames: list[str],
          written: dict[str, Any]) -> dict[str, Any]:
    split_counts = {sp: sum(concepts[k].split == sp for k in drawn) for sp in (TRAIN, UNSEEN)}
    samples = {s: {sp: sum(x.concept.split == sp for x in imgs.samples.values()) for sp in (TRAIN, UNSEEN)}
               for s, imgs in images.items()}
    if len(images) > 1:
        samples[ALL] = {TRAIN: sum(v[TRAIN] for v in samples.values()), UNSEEN: 0}
    return {
        "format": FORMAT, "styles": list(cfg.styles), "image_size": cfg.image_size,
        "packages": dict(sorted(pkgs.versions.items())),
        "source_size": rnd.SOURCE_SIZE, "background": "#{:02x}{:02x}{:02x}".format(*rnd.BACKGROUND),
        "resize": "Pillow Lanczos", "svg_renderer": renderer, "png_deflate_level": wr.PNG_LEVEL,
        "skin_tones": SKIN_TONE_RULE,
        "split": {"rule": "sha256(salt|hexcode) as a fraction < unseen_fraction -> unseen",
                  "salt": SPLIT_SALT, "unseen_fraction": UNSEEN_FRACTION, "same_for_every_style": True},
        "caption_templates": list(CAPTION_TEMPLATES),
        "classification_templates": list(wr.CLASSIFICATION_TEMPLATES),
        "concepts": {"total": len(drawn), **split_counts, "emojibase_concepts": len(concepts),
                     "classes": len(classnames)},
        "samples": samples,
        "missing_concepts": {s: len(drawn) - len(imgs.samples) for s, imgs in images.items()},
        "skipped": {s: imgs.counts for s, imgs in images.items()},
        **written, "suite": SUITE_FILE, "manifest": MANIFEST_FILE,
    }
