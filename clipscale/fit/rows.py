"""Results tables in, rows out: read a table (CSV, JSON lines, parquet), take a column or a safe
expression over columns (clipscale.fit.expr: parsed and checked, never eval'd; backticks for names with
spaces), select rows (`--where`, `--max-passes`), check a grouping column. What `fit`, `compare` and
`isoflop` share before any fitting; table.py fits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipscale.errors import ClipscaleError


def load_table(path: str | Path) -> pd.DataFrame:
    """CSV, JSON lines (.jsonl/.json) or parquet, by extension; a table with no rows is an error."""
    path = Path(path)
    if not path.is_file():
        raise ClipscaleError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        df = _read(path, suffix)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ClipscaleError(
            f"{path}: cannot read as a {suffix or 'csv'} table: {str(exc).splitlines()[0]}"
        ) from None
    if df.empty:
        raise ClipscaleError(f"{path}: the table has no rows; expected one row per run or checkpoint")
    return df


def _read(path: Path, suffix: str) -> pd.DataFrame:
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        try:
            return pd.read_json(path, lines=True)
        except ValueError:
            return pd.read_json(path)
    return pd.read_csv(path)


def column(df: pd.DataFrame, expr: str, option: str) -> np.ndarray:
    """A column by name, else a safe expression over the columns (clipscale.fit.expr)."""
    values = df[expr] if expr in df.columns else _evaluate(df, expr, option)
    if np.ndim(values) == 0:
        values = pd.Series(np.full(len(df), values), index=df.index)
    try:
        return pd.to_numeric(pd.Series(values, index=df.index), errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError):
        raise ClipscaleError(f"--{option} {expr!r}: values are not numeric") from None


def _evaluate(df: pd.DataFrame, expr: str, option: str) -> object:
    """Parse (refusing anything outside the grammar before evaluating), then evaluate over `df`."""
    from clipscale.fit.expr import ExpressionError, parse, unknown_column

    try:
        parsed = parse(expr)
        missing = sorted(n for n in parsed.names if n not in df.columns)
        if missing:
            raise ClipscaleError(f"--{option} {expr!r}: not a column or expression over the columns: "
                                 f"{unknown_column(missing[0], df.columns)}")
        return parsed.evaluate(df)
    except ExpressionError as exc:
        raise ClipscaleError(f"--{option} {expr!r}: {exc}") from None


def row_mask(df: pd.DataFrame, expr: str, option: str) -> np.ndarray:
    """A boolean expression over the rows (clipscale.fit.expr) as a mask; anything else is an error."""
    mask = df[expr] if expr in df.columns else _evaluate(df, expr, option)
    if np.ndim(mask) == 0:
        mask = np.full(len(df), mask)
    mask = np.asarray(mask)
    if mask.shape != (len(df),) or mask.dtype != bool:
        raise ClipscaleError(f"--{option} {expr!r}: not a boolean expression over the rows (e.g. 'N > 100')")
    return mask


def filter_rows(df: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where:
        return df
    out = df[row_mask(df, where, "where")]
    if out.empty:
        raise ClipscaleError(f"--where {where!r} keeps no rows of {len(df)}")
    return out


def check_key_column(df: pd.DataFrame, name: str, option: str) -> None:
    """A column rows are grouped by must exist and have a value in every row: pandas' groupby would
    drop the rows without one, and with them part of the data, silently."""
    if name not in df.columns:
        from clipscale.fit.expr import unknown_column

        raise ClipscaleError(f"{option} {name!r}: {unknown_column(name, df.columns)}")
    missing = np.flatnonzero(df[name].isna().to_numpy())
    if missing.size:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if missing.size > 8 else "")
        raise ClipscaleError(
            f"{option} {name!r}: {missing.size} row(s) have no value, at position(s) {shown}; fill them "
            "in or leave them out with --where"
        )


def leave_out_passes(
    df: pd.DataFrame, max_passes: float | None, where: str | None
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Rows over `max_passes` passes (samples_seen / data_size) left out; and what to tell the user: how
    many were left out, or, without --max-passes, how many of the rows fitted repeat their data."""
    has = {"samples_seen", "data_size"} <= set(df.columns)
    if max_passes is not None and not has:
        raise ClipscaleError("--max-passes needs the table's samples_seen and data_size columns (passes = "
                             "samples_seen / data_size); this table lacks "
                             f"{', '.join(sorted({'samples_seen', 'data_size'} - set(df.columns)))}")
    if max_passes is not None and not max_passes > 0:
        raise ClipscaleError(f"--max-passes {max_passes:g}: expected a number of passes > 0")
    if not has:
        return df, None
    selected = filter_rows(df, where)
    passes = (selected.samples_seen / selected.data_size).astype(float)
    if max_passes is None:
        repeated = passes > 1
        if not repeated.any():
            return df, None
        return df, {"max_passes": None, "left_out_rows": 0, "repeating_rows": int(repeated.sum()),
                    "text": f"{int(repeated.sum())} of {len(selected)} rows repeat their unique data (up to "
                    f"{passes.max():.3g} passes); --max-passes N leaves out those over N (studies: 10)"}
    over = passes > max_passes
    note = {"max_passes": max_passes, "left_out_rows": int(over.sum()), "of_rows": len(selected),
            "text": f"--max-passes {max_passes:g}: left out {int(over.sum())} of {len(selected)} rows with "
            f"more than {max_passes:g} passes over their unique data (samples_seen / data_size)"}
    return df.drop(index=selected.index[over.to_numpy()]), note
