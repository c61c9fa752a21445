"""A small random grammar that describes a scene, mentioning a random subset of what is true.

Captions name objects with optional size, texture, colour and position, relate pairs ("a red circle
above a small blue square"), count ("two stars and a heart", "three shapes") and add a random
framing ("a photo of ..."). Every statement is true of the scene, but most captions leave some
attributes out, so matching images to captions needs binding attributes to objects and positions:
a compositional task that tiny models learn gradually rather than at once. Captions are lowercase
words separated by single spaces, all from `vocab.WORDS` (a test checks many thousands).
"""

from __future__ import annotations

import numpy as np

from clipscale.data.synth.distributions import CaptionStyle
from clipscale.data.synth.scene import SceneObject
from clipscale.data.synth.shapes import SHAPE_PLURALS

MAX_CAPTION_WORDS = 30
NUMBER_WORDS = ("no", "one", "two", "three", "four")
SIZE_WORDS = {"small": ("small", "small", "tiny", "little"), "large": ("large", "large", "big", "huge")}
TEXTURE_WORDS = {"plain": ("plain", "solid"), "striped": ("striped",), "dotted": ("dotted",)}
GENERIC_NOUNS = ("shape", "object", "thing")
GENERIC_PLURALS = ("shapes", "objects", "things")
PREFIXES = (
    "a photo of", "a picture of", "an image of", "a drawing of", "a scene with", "an image showing",
    "a picture containing", "a photo showing", "a picture with",
)


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def position_phrase(rng: np.random.Generator, row: int, col: int) -> str:
    """Where a grid cell is, in words: "on the left", "in the top right corner", "in the center"."""
    vertical = ("top", "middle", "bottom")[row]
    horizontal = ("left", "center", "right")[col]
    if row == 1 and col == 1:
        return _choice(rng, ("in the center", "in the middle"))
    if row == 1:
        return _choice(rng, (f"on the {horizontal}", f"on the {horizontal} side"))
    if col == 1:
        return f"at the {vertical}"
    upper = ("upper", "lower")[row // 2]
    return _choice(rng, (f"in the {vertical} {horizontal} corner", f"in the {upper} {horizontal}",
                         f"at the {vertical} {horizontal}"))


def relation_phrase(rng: np.random.Generator, a: SceneObject, b: SceneObject) -> str:
    """A spatial relation that holds between a and b (rows/columns of the grid)."""
    options: list[str] = []
    if a.row < b.row:
        options += ["above", "over"]
    if a.row > b.row:
        options += ["below", "under"]
    if a.col < b.col:
        options += ["to the left of"]
    if a.col > b.col:
        options += ["to the right of"]
    if abs(a.row - b.row) + abs(a.col - b.col) == 1:
        options += ["next to", "beside"]
    return _choice(rng, tuple(options))


def object_phrase(rng: np.random.Generator, obj: SceneObject, style: CaptionStyle, *, article: bool = True,
                  position: bool = True) -> str:
    words: list[str] = []
    if rng.random() < style.p_size:
        words.append(_choice(rng, SIZE_WORDS[obj.size]))
    if rng.random() < style.p_texture and (obj.texture != "plain" or rng.random() < 0.2):
        words.append(_choice(rng, TEXTURE_WORDS[obj.texture]))
    has_color = rng.random() < style.p_color
    if has_color:
        words.append(obj.color)
    generic = (has_color or words) and rng.random() < 0.15
    words.append(_choice(rng, GENERIC_NOUNS) if generic else obj.shape)
    if article:
        words.insert(0, "the" if rng.random() < 0.1 else _article(words[0]))
    if position and rng.random() < style.p_position:
        words.append(position_phrase(rng, obj.row, obj.col))
    return " ".join(words)


def _join(rng: np.random.Generator, phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) > 2 and rng.random() < 0.4:
        return f"{phrases[0]} with {' and '.join(phrases[1:])}"
    return " and ".join(phrases)


def _count_caption(rng: np.random.Generator, objects: list[SceneObject], style: CaptionStyle) -> str:
    n = len(objects)
    if rng.random() < 0.5:  # total count
        plural = _choice(rng, GENERIC_PLURALS) if n > 1 else _choice(rng, GENERIC_NOUNS)
        count = f"{NUMBER_WORDS[n]} {plural}" if n > 1 or rng.random() < 0.5 else f"a single {plural}"
        return _choice(rng, (count, f"there are {count}" if n > 1 else f"only {count}",
                             f"{_choice(rng, PREFIXES)} {count}"))
    groups: dict[str, list[SceneObject]] = {}
    for obj in objects:
        groups.setdefault(obj.shape, []).append(obj)
    phrases = []
    for shape, members in groups.items():
        if len(members) == 1:
            phrases.append(object_phrase(rng, members[0], style, position=False))
            continue
        same_color = len({m.color for m in members}) == 1
        color = f"{members[0].color} " if same_color and rng.random() < style.p_color else ""
        phrases.append(f"{NUMBER_WORDS[len(members)]} {color}{SHAPE_PLURALS[shape]}")
    order = rng.permutation(len(phrases))
    return _join(rng, [phrases[i] for i in order])


def caption(rng: np.random.Generator, objects: list[SceneObject], style: CaptionStyle) -> str:
    """One random true description of the scene, at most MAX_CAPTION_WORDS words.

    The word limit keeps captions inside a 32-token context (with start/end tokens): ~0.6 % of rich
    captions are longer and are redrawn.
    """
    for _ in range(8):
        text = _draw_caption(rng, objects, style)
        if text.count(" ") < MAX_CAPTION_WORDS:
            return text
    return object_phrase(rng, objects[0], style, position=False)


def _draw_caption(rng: np.random.Generator, objects: list[SceneObject], style: CaptionStyle) -> str:
    n = len(objects)
    mode = rng.random()
    if n >= 2 and mode < style.p_relation:
        i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
        a, b = objects[i], objects[j]
        body = (f"{object_phrase(rng, a, style, position=False)} {relation_phrase(rng, a, b)} "
                f"{object_phrase(rng, b, style, position=False)}")
    elif mode < style.p_relation + style.p_count:
        return _count_caption(rng, objects, style)
    else:
        k = n  # all objects, else usually one, else a random number of them
        if rng.random() >= style.p_all_objects:
            k = 1 if rng.random() < 0.6 else 1 + int(rng.integers(n))
        order = rng.permutation(n)[:k]
        body = _join(rng, [object_phrase(rng, objects[i], style) for i in order])
    if rng.random() < style.p_prefix:
        body = f"{_choice(rng, PREFIXES)} {body}"
    return body
