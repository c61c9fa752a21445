"""Validation of saved fits (fits.json, `clipscale fit --save`) on read.

A hand-edited or truncated file must give one line naming the file and the key, never a traceback or a
prediction built from a NaN parameter. Only the keys a saved fit is read back through are checked;
others (a study's `extrapolation_check`, `predictions`, the document's `left_out`...) pass as they are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from clipscale.errors import ClipscaleError

SAVED_FORMAT = "clipscale-fits/1"


def _bad(where: str, key: str, expected: str, got: Any) -> ClipscaleError:
    shown = repr(got) if not isinstance(got, (dict, list)) or len(repr(got)) < 60 else type(got).__name__
    return ClipscaleError(f"{where}: {key}: expected {expected}, got {shown}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite(where: str, key: str, v: Any) -> float:
    if not (_number(v) and math.isfinite(v)):
        raise _bad(where, key, "a finite number", v)
    return float(v)


def _mapping(where: str, key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(where, key, "an object", v)
    return v


def _pair(where: str, key: str, v: Any, *, positive: bool = False) -> None:
    if not (isinstance(v, list) and len(v) == 2):
        raise _bad(where, key, "a [low, high] pair of numbers", v)
    lo, hi = (finite(where, key, x) for x in v)
    if lo > hi or (positive and lo <= 0):
        raise _bad(where, key, "low <= high" + (" and both > 0" if positive else ""), v)


def check_fits_document(doc: Any, where: str) -> list[dict[str, Any]]:
    """The entries of a saved-fit document ({"fits": [...]}), each checked by `check_fit_entry`."""
    if not isinstance(doc, dict):
        raise _bad(where, "document", "a JSON object with a 'fits' list", type(doc).__name__)
    fits = doc.get("fits")
    if not isinstance(fits, list) or not fits:
        raise _bad(where, "fits", "a non-empty list of fits (write one with clipscale fit --save)", fits)
    for i, f in enumerate(fits):
        check_fit_entry(f, f"{where}: fits[{i}]", names=None)
    return fits


def check_fit_entry(d: Any, where: str, names: tuple[str, ...] | None) -> None:
    """Types and shapes of the keys `FitResult.from_dict` reads. `names` are the law's parameters (None:
    looked up from the entry's law)."""
    if not isinstance(d, dict):
        raise _bad(where, "fit", "an object", type(d).__name__)
    for key in ("law", "params"):
        if key not in d:
            raise ClipscaleError(f"{where}: missing key {key!r}")
    if names is None:
        from clipscale.fit.laws import get_law

        if not isinstance(d["law"], str):
            raise _bad(where, "law", "a law name", d["law"])
        try:
            names = get_law(d["law"]).params
        except ClipscaleError as exc:
            raise ClipscaleError(f"{where}: law: {exc}") from None
    params = _mapping(where, "params", d["params"])
    for k in names:
        if k not in params:
            raise ClipscaleError(f"{where}: params: missing parameter {k!r} of law {d['law']!r}")
        finite(where, f"params.{k}", params[k])
    _check_optional(d, where, len(names))


def _check_optional(d: dict[str, Any], where: str, n_params: int) -> None:
    for k, v in _mapping(where, "ci", d.get("ci") or {}).items():
        _pair(where, f"ci.{k}", v)
    for k, v in _mapping(where, "input_ranges", d.get("input_ranges") or {}).items():
        _pair(where, f"input_ranges.{k}", v, positive=True)
    for k, v in _mapping(where, "fixed", d.get("fixed") or {}).items():
        finite(where, f"fixed.{k}", v)
    rows = d.get("bootstrap_params") or []
    if not isinstance(rows, list):
        raise _bad(where, "bootstrap_params", "a list of rows", rows)
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == n_params):
            raise _bad(where, f"bootstrap_params[{i}]", f"a row of {n_params} numbers (one a parameter)", row)
        for x in row:
            finite(where, f"bootstrap_params[{i}]", x)
    link = _mapping(where, "link", d.get("link") or {})
    if "lambda" in link:
        finite(where, "link.lambda", link["lambda"])
    for key in ("derived", "bootstrap_median", "bootstrap_undefined"):
        for k, v in _mapping(where, key, d.get(key) or {}).items():
            if v is not None and not _number(v):
                raise _bad(where, f"{key}.{k}", "a number", v)
    for key in ("n_points", "n_fitted", "n_starts", "n_starts_at_best", "bootstrap_failed"):
        if d.get(key) is not None and not (_number(d[key]) and float(d[key]).is_integer()):
            raise _bad(where, key, "an integer", d[key])
    for key in ("objective", "r2", "r2_log", "huber_delta"):
        if d.get(key) is not None and not _number(d[key]):
            raise _bad(where, key, "a number", d[key])
    for key in ("at_bound", "notes", "warnings"):
        if not isinstance(d.get(key) or [], list):
            raise _bad(where, key, "a list", d[key])
    fp = _mapping(where, "frontier_points", d.get("frontier_points") or {})
    if len({len(v) if isinstance(v, list) else -1 for v in fp.values()}) > 1 or any(
        not isinstance(v, list) for v in fp.values()
    ):
        raise _bad(where, "frontier_points", "lists of one length (C, y, fitted)", fp)
    if d.get("ci_unavailable") is not None and not isinstance(d["ci_unavailable"], str):
        raise _bad(where, "ci_unavailable", "a reason (text) or null", d["ci_unavailable"])


def _group_name(g: Any) -> Any:
    """A group label as JSON holds it: numpy scalars become Python ones, tuples (several --by keys) lists."""
    if hasattr(g, "item"):
        return g.item()
    if isinstance(g, tuple):
        return [_group_name(v) for v in g]
    return g


def saved_fit_document(results: list[tuple[Any, ...]], *, by: str | None = None) -> dict[str, Any]:
    """The saved-fit document (`clipscale fit --save`, read by `clipscale predict`): one entry per group.

    `results` holds (group, FitResult, ...) tuples, e.g. what `fit_table_results` returns second; the
    group is the value of the `by` column (None for an ungrouped fit), what `predict --group` matches
    (`clipscale.fit.groups`)."""
    fits = []
    for entry in results:
        group, fit = entry[0], entry[1]
        if not hasattr(fit, "to_dict") or not hasattr(fit, "bootstrap_params"):
            raise ClipscaleError(
                f"saved_fit_document: expected (group, FitResult, ...), got {type(fit).__name__}"
            )
        fits.append({"group": _group_name(group), **fit.to_dict()})
    return {"format": SAVED_FORMAT, "by": by, "fits": fits}


def save_fits(path: str | Path, results: list[tuple[Any, ...]], *, by: str | None = None) -> None:
    """Write `saved_fit_document(results, by=by)` to `path` atomically."""
    from clipscale.io import atomic_write_json

    atomic_write_json(path, saved_fit_document(results, by=by))
