"""Concepts (emojibase's CLDR names, tags, groups), each style's artwork, their join, split and captions.

A concept is one emojibase entry that has a group (regional-indicator letters have none), keyed by
its code points with the FE0F/FE0E variation selectors removed, because the packages disagree on
them (emojibase writes "263A-FE0F", an art set may name the file "263a.png"). Skin-tone variants
(emojibase's `skins`) are dropped, not kept as concepts or as extra images of their base: they
share the base's name up to ": light skin tone" and differ only in colour, so keeping them would
make half the pairs near-duplicates. They are counted per style in meta.json.

The split is a pure function of the concept's code points (SHA-256 of a salted key; Python's
`hash()` is salted per process), the same for every style, and stable when a package adds concepts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError

STYLES = ("google", "twitter", "openmoji")
STYLE_PACKAGES = {"google": "emoji-datasource-google", "twitter": "emoji-datasource-twitter",
                  "openmoji": "openmoji"}
SPLIT_SALT = "clipscale-emoji-split-1"
UNSEEN_FRACTION = 0.2
TRAIN, UNSEEN = "train", "unseen"
VARIATION_SELECTORS = ("FE0F", "FE0E")
MAX_TAGS = 3
# Caption variants. Each training image gets one of them (a different one per style), each unseen
# image all of them as its retrieval captions. Templates with {tags} are used only where tags remain.
CAPTION_TEMPLATES = ("{name}", "an emoji of {name}", "{name}: {tags}", "a picture of {name}, {tags}")


def normalize_hexcode(code: str) -> str:
    """'263a-fe0f' -> '263A': upper-case code points joined by '-', variation selectors removed."""
    parts = [p for p in code.strip().upper().split("-") if p and p not in VARIATION_SELECTORS]
    return "-".join(parts)


def stable_hash(text: str) -> int:
    """64 bits of SHA-256: the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def concept_split(hexcode: str) -> str:
    """'train' or 'unseen' (~20 %), from the code points alone: identical for every style and run."""
    return UNSEEN if stable_hash(f"{SPLIT_SALT}|{hexcode}") / 2**64 < UNSEEN_FRACTION else TRAIN


@dataclass(frozen=True)
class Concept:
    hexcode: str  # normalised code points: the join key and the concept's id
    name: str  # CLDR English short name (emojibase "label")
    tags: tuple[str, ...]  # emojibase keywords, at most MAX_TAGS, none made only of the name's words
    group: str  # emojibase group key, e.g. "smileys-emotion"
    subgroup: str  # e.g. "face-smiling"
    order: int  # emojibase's order: eval sets list concepts in it
    split: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", concept_split(self.hexcode))

    def captions(self) -> list[str]:
        """The caption variants, deterministic, without duplicates."""
        tags = ", ".join(self.tags)
        out: list[str] = []
        for template in CAPTION_TEMPLATES:
            if "{tags}" in template and not tags:
                continue
            text = template.format(name=self.name, tags=tags)
            if text not in out:
                out.append(text)
        return out

    def train_caption(self, style: str) -> str:
        """One variant per (concept, style): the styles of one concept get different variants."""
        variants = self.captions()
        return variants[(stable_hash(self.hexcode) + STYLES.index(style)) % len(variants)]


@dataclass(frozen=True)
class Artwork:
    style: str
    hexcode: str  # normalised
    path: Path
    kind: str  # "png" or "svg"


@dataclass
class StyleArt:
    """One style's images joined to the concepts, with what was left out and why."""

    style: str
    art: dict[str, Artwork]  # concept hexcode -> artwork
    skin_tone_dropped: int = 0
    unmatched: int = 0  # images whose code points are no emojibase concept (e.g. OpenMoji extras)
    duplicates: int = 0  # a second file for the same concept (variation-selector spellings)
    missing_files: int = 0  # listed in the package's metadata but absent on disk

    def counts(self) -> dict[str, int]:
        return {"images_joined": len(self.art), "skin_tone_dropped": self.skin_tone_dropped,
                "unmatched": self.unmatched, "duplicates": self.duplicates,
                "missing_files": self.missing_files}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipscaleError(f"{path}: not found (is the package complete?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClipscaleError(f"{path}: not readable JSON ({exc})") from None


def _pick_tags(hexcode: str, name: str, tags: Iterable[Any]) -> tuple[str, ...]:
    """Up to MAX_TAGS keywords that are not just words of the name, in a fixed pseudo-random order
    (emojibase lists them alphabetically, so the first ones would be biased towards early letters)."""
    name_words = set(name.lower().replace(":", " ").split())
    kept = {str(t).strip() for t in tags if str(t).strip()}
    kept = {t for t in kept if not set(t.lower().split()) <= name_words}  # adds nothing to the name
    words = sorted(kept, key=lambda t: (stable_hash(f"{hexcode}|{t}"), t))
    return tuple(words[:MAX_TAGS])


def load_concepts(emojibase: Path) -> tuple[dict[str, Concept], set[str]]:
    """emojibase-data's English data: concepts by hexcode, and the skin-tone variants' hexcodes."""
    data_file = emojibase / "en" / "data.json"
    data = _read_json(data_file)
    meta = _read_json(emojibase / "meta" / "groups.json")
    try:
        groups, subgroups = meta["groups"], meta["subgroups"]
        concepts: dict[str, Concept] = {}
        skins: set[str] = set()
        for entry in data:
            if "group" not in entry:
                continue
            code = normalize_hexcode(entry["hexcode"])
            name = str(entry["label"]).strip()
            concepts[code] = Concept(code, name, _pick_tags(code, name, entry.get("tags", ())),
                                     groups[str(entry["group"])], subgroups[str(entry.get("subgroup"))],
                                     int(entry.get("order", len(concepts))))
            skins.update(normalize_hexcode(s["hexcode"]) for s in entry.get("skins", ()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ClipscaleError(f"{data_file}: unexpected emojibase-data layout ({exc!r})") from None
    if not concepts:
        raise ClipscaleError(f"{data_file}: no emoji with a group")
    return concepts, skins


def _add(found: StyleArt, concepts: dict[str, Concept], skins: set[str], art: Artwork) -> None:
    if not art.path.is_file():
        found.missing_files += 1
    elif art.hexcode in skins:
        found.skin_tone_dropped += 1
    elif art.hexcode not in concepts:
        found.unmatched += 1
    elif art.hexcode in found.art:
        found.duplicates += 1
    else:
        found.art[art.hexcode] = art


def datasource_art(style: str, package: Path, concepts: dict[str, Concept], skins: set[str]) -> StyleArt:
    """emoji-datasource-<style>: emoji.json lists each emoji (and its skin variations) and its 64 px PNG."""
    meta_file = package / "emoji.json"
    entries = _read_json(meta_file)
    found = StyleArt(style, {})
    img_dir = package / "img" / style / "64"
    flag = f"has_img_{style}"
    try:
        for entry in entries:
            for item in [entry, *(entry.get("skin_variations") or {}).values()]:
                if item.get(flag, True):
                    art = Artwork(style, normalize_hexcode(item["unified"]), img_dir / item["image"], "png")
                    _add(found, concepts, skins, art)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ClipscaleError(f"{meta_file}: unexpected emoji-datasource layout ({exc!r})") from None
    return found


def openmoji_art(package: Path, concepts: dict[str, Concept], skins: set[str]) -> StyleArt:
    """openmoji: one SVG per emoji, named by its code points (color/svg/1F600.svg)."""
    svg_dir = package / "color" / "svg"
    if not svg_dir.is_dir():
        raise ClipscaleError(f"{svg_dir}: not found (is the openmoji package complete?)")
    found = StyleArt("openmoji", {})
    for path in sorted(svg_dir.glob("*.svg")):
        _add(found, concepts, skins, Artwork("openmoji", normalize_hexcode(path.stem), path, "svg"))
    return found


def style_art(style: str, package: Path, concepts: dict[str, Concept], skins: set[str]) -> StyleArt:
    if style == "openmoji":
        return openmoji_art(package, concepts, skins)
    return datasource_art(style, package, concepts, skins)


def parse_styles(styles: str | Iterable[str]) -> list[str]:
    """'google,twitter' -> ['google', 'twitter'] in canonical order; unknown -> one line listing the valid."""
    items = [s.strip() for s in styles.split(",")] if isinstance(styles, str) else [str(s) for s in styles]
    items = [s for s in items if s]
    unknown = [s for s in items if s not in STYLES]
    if unknown or not items:
        got = ", ".join(repr(s) for s in unknown) if unknown else "none"
        raise ClipscaleError(f"styles: unknown style {got}; valid styles: {', '.join(STYLES)}")
    return [s for s in STYLES if s in items]
