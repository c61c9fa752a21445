"""Group names: one scheme for every saved fit, text line, report row and `--group` flag.

A group is named by the parts that tell its fit apart from the others in its document, joined by `/`,
most general first:

- a study's fits.json: `DATASET/METRIC/DISTRIBUTION/LAW`
  (`synth_retrieval/image_retrieval_recall@5/uniform/frontier`);
- `clipscale fit --by COL[,COL2]`: the value(s) of the `--by` columns (`uniform`, `uniform/tiny-S0`).

`--group` takes a full name or any unambiguous tail of one (`uniform/frontier` when only one target
has a frontier law for `uniform`), the way git takes a short hash: an ambiguous tail is an error that
lists the names it matches, never a silent first pick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clipscale.errors import ClipscaleError

SEPARATOR = "/"


def group_label(group: Any) -> str:
    """The text of a saved group: its parts joined by `/` (a list from several --by columns), else str."""
    if isinstance(group, (list, tuple)):
        return SEPARATOR.join(map(str, group))
    return str(group)


def study_group(*, dataset: str, metric: str, distribution: Any, law: str) -> str:
    """A study fit's group name: DATASET/METRIC/DISTRIBUTION/LAW."""
    return SEPARATOR.join(map(str, (dataset, metric, distribution, law)))


def _same_number(saved: Any, wanted: str) -> bool:
    """4 matches a saved 4.0 (a numeric --by column)."""
    try:
        numeric = isinstance(saved, (int, float)) and not isinstance(saved, bool)
        return numeric and float(wanted) == float(saved)
    except ValueError:
        return False


def _is_tail(label: str, wanted: str) -> bool:
    parts, tail = label.split(SEPARATOR), wanted.strip(SEPARATOR).split(SEPARATOR)
    return len(tail) <= len(parts) and parts[-len(tail):] == tail


def find_group(groups: Sequence[Any], wanted: str, *, where: str) -> int:
    """The index of the saved group `wanted` names: the full name, the same number, or a unique tail.

    `where` names the document in the errors, which list the candidates."""
    labels = [group_label(g) for g in groups]
    wanted = wanted.strip()
    exact = [i for i, (g, label) in enumerate(zip(groups, labels, strict=True))
             if label == wanted or _same_number(g, wanted)]
    if len(exact) == 1:
        return exact[0]
    tails = exact or [i for i, label in enumerate(labels) if wanted and _is_tail(label, wanted)]
    if len(tails) == 1:
        return tails[0]
    if tails:
        raise ClipscaleError(f"{where}: --group {wanted!r} matches {len(tails)} groups "
                             f"({', '.join(labels[i] for i in tails)}); give more of the name")
    raise ClipscaleError(f"{where}: no group {wanted!r}; groups are: {', '.join(labels)}")
