"""The scale a law of an error is fitted on, and how `--link auto` picks it.

A law is fitted to g_lam(E) = ((1 - E)^-lam - 1)/lam, the Box-Cox family of the accuracy 1 - E:
lam = -1 is the error E itself (the default of every earlier release), 0 is -log(accuracy), 1 the odds
E/(1 - E). Predictions, validation errors and R^2 are always of E.

Why a family: an aggregate whose parts accelerate with scale (ImageNet-A inside imagenet_robustness) is a
power law in -log(accuracy) rather than in E, while retrieval's E is one as it stands; no single scale holds
for every target (docs/scaling-laws.md). Goodness of fit on the runs does not tell them apart (leave-one-
out, the Box-Cox likelihood and lam as a free shape parameter all pick scales that extrapolate worse), so
`auto` picks lam by what a scaling law is for: predicting larger models. Fitted on the runs of the
smaller model sizes only, which lam predicts the next size best (rolling origin over the distinct N,
pooled MAE in accuracy points). Ties keep E. Not the default: where E is the right scale the choice
among noisy runs doubles the extrapolation error (docs/scaling-laws.md). Written here because no fitting
library chooses a link by forward validation over an input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipscale.errors import ClipscaleError

IDENTITY = -1.0  # g_-1(E) = E
LAMBDAS = (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)  # from E through -log(accuracy) to odds
NAMES = {"error": -1.0, "neglog": 0.0, "odds": 1.0}
MIN_SIZES = 3  # two model sizes to fit the law's size terms on, one to predict


def parse_link(spec: str | float | None) -> float | None:
    """`auto` (None: chosen by forward validation), `error`, `neglog`, `odds`, or `boxcox:LAM`."""
    if spec is None or spec == "auto":
        return None
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        lam = float(spec)
    elif isinstance(spec, str) and spec in NAMES:
        return NAMES[spec]
    elif isinstance(spec, str) and spec.startswith("boxcox:"):
        try:
            lam = float(spec.split(":", 1)[1])
        except ValueError:
            lam = float("nan")
    else:
        lam = float("nan")
    if not -3.0 <= lam <= 3.0:
        raise ClipscaleError(
            f"--link {spec!r}: expected auto, error, neglog, odds or boxcox:LAM with LAM in [-3, 3]"
        )
    return lam


def transform(e: np.ndarray, lam: float) -> np.ndarray:
    """g_lam(E) for errors E in (0, 1] (E = 1 needs lam < 0)."""
    e = np.asarray(e, float)
    if lam == IDENTITY:
        return e
    if lam == 0.0:
        return -np.log1p(-e)
    with np.errstate(divide="ignore"):
        return ((1.0 - e) ** (-lam) - 1.0) / lam


def inverse(t: np.ndarray, lam: float) -> np.ndarray:
    """E from g_lam(E); values beyond the range of g map to E = 1 (lam < 0 has g <= -1/lam)."""
    t = np.asarray(t, float)
    if lam == IDENTITY:
        return t
    if lam == 0.0:
        return -np.expm1(-t)
    base = np.maximum(1.0 + lam * t, 0.0)
    with np.errstate(divide="ignore"):
        return 1.0 - base ** (-1.0 / lam)


def link_name(lam: float) -> str:
    inv = {v: k for k, v in NAMES.items()}
    return inv.get(lam, f"boxcox:{lam:g}")


@dataclass
class LinkChoice:
    """The scale a fit used: `lam`, how it was chosen (`by`: given or auto) and, for auto, the forward
    MAE in accuracy points of every candidate (`scores`) and the model sizes it predicted (`predicted`)."""

    lam: float
    by: str = "given"
    scores: dict[str, float] = field(default_factory=dict)
    predicted: list[float] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "lambda": self.lam,
            "name": link_name(self.lam),
            "by": self.by,
            "scores_pct": dict(self.scores),
            "predicted_N": list(self.predicted),
            "reason": self.reason,
        }


def forward_splits(n_values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) masks: for each model size from the third smallest up, train on the smaller sizes."""
    sizes = np.unique(n_values)
    return [(n_values < s, n_values == s) for s in sizes[MIN_SIZES - 1 :]]


def choose_link(
    candidates: list[float],
    splits: list[tuple[np.ndarray, np.ndarray]],
    forward_errors: Callable[[float, np.ndarray, np.ndarray], np.ndarray],
    predicted: list[float],
) -> LinkChoice:
    """The candidate with the lowest pooled |error| (points) over the test rows of every split;
    `forward_errors(lam, train, test)` returns the errors of E at the test rows. Ties keep the first."""
    scores: dict[str, float] = {}
    best: tuple[float, float] | None = None
    for lam in candidates:
        errs = np.concatenate([forward_errors(lam, tr, te) for tr, te in splits])
        score = float(100 * np.mean(np.abs(errs)))
        scores[f"{lam:g}"] = score
        if np.isfinite(score) and (best is None or score < best[1] * (1 - 1e-9)):
            best = (lam, score)
    if best is None:
        return LinkChoice(IDENTITY, "auto", scores, predicted, "no candidate scale gave finite predictions")
    return LinkChoice(best[0], "auto", scores, predicted, "lowest forward MAE over model sizes")
