"""Registry of training distributions: attribute frequencies plus a caption style.

Two distributions let a study ask how the training distribution changes scaling (the paper's LAION vs
WIT question). In the prototype (../shared/design/tiny-scale-findings.md) "zipf" (skewed shape and
colour frequencies, terse captions) was worse than "uniform" at every budget and the gap grew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipscale.data.synth.shapes import COLOR_NAMES, SHAPES, SIZES, TEXTURES
from clipscale.errors import ClipscaleError


@dataclass(frozen=True)
class CaptionStyle:
    """Probabilities that a caption mentions each attribute, and how often it describes relations."""

    p_color: float
    p_size: float
    p_texture: float
    p_position: float
    p_all_objects: float  # describe every object (else a random non-empty subset)
    p_relation: float  # use "X above Y" when there are >= 2 objects
    p_count: float  # use counting ("two stars", "three shapes")
    p_prefix: float  # "a photo of", "an image showing", ...


RICH = CaptionStyle(p_color=0.8, p_size=0.5, p_texture=0.5, p_position=0.35, p_all_objects=0.7,
                    p_relation=0.35, p_count=0.25, p_prefix=0.6)
TERSE = CaptionStyle(p_color=0.55, p_size=0.12, p_texture=0.1, p_position=0.05, p_all_objects=0.2,
                     p_relation=0.05, p_count=0.08, p_prefix=0.3)


@dataclass(frozen=True, eq=False)  # identity hash: the registry holds one instance per name
class Distribution:
    name: str
    description: str
    shape_p: np.ndarray
    color_p: np.ndarray
    count_p: np.ndarray  # P(n objects = 1, 2, 3, 4)
    size_p: np.ndarray
    texture_p: np.ndarray
    style: CaptionStyle

    def __post_init__(self) -> None:
        for field, n in (("shape_p", len(SHAPES)), ("color_p", len(COLOR_NAMES)), ("count_p", 4),
                         ("size_p", len(SIZES)), ("texture_p", len(TEXTURES))):
            p = getattr(self, field)
            if p.shape != (n,) or not np.isclose(p.sum(), 1.0) or (p < 0).any():
                raise ValueError(f"distribution {self.name}: {field} must be {n} probabilities")


def _uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def _zipf(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


_TEXTURE_P = np.array([0.5, 0.25, 0.25])

_REGISTRY: dict[str, Distribution] = {
    d.name: d
    for d in (
        Distribution(
            name="uniform",
            description="uniform shapes/colours/sizes, 1-4 objects, rich captions with relations",
            shape_p=_uniform(len(SHAPES)), color_p=_uniform(len(COLOR_NAMES)), count_p=_uniform(4),
            size_p=_uniform(len(SIZES)), texture_p=_TEXTURE_P, style=RICH,
        ),
        Distribution(
            name="zipf",
            description="Zipf(1.3) shape and colour frequencies, mostly single objects, terse captions",
            shape_p=_zipf(len(SHAPES), 1.3), color_p=_zipf(len(COLOR_NAMES), 1.3),
            count_p=np.array([0.4, 0.3, 0.2, 0.1]), size_p=_uniform(len(SIZES)), texture_p=_TEXTURE_P,
            style=TERSE,
        ),
    )
}


def list_distributions() -> list[str]:
    """Names accepted by `distribution=` (and `--distribution`)."""
    return sorted(_REGISTRY)


def get_distribution(name: str) -> Distribution:
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(list_distributions())
        raise ClipscaleError(f"unknown distribution {name!r}; valid: {valid}") from None
