"""Scaling-law fitting: power/frontier lines, Huber log-sum-exp laws, bootstrap, validation, reproduction.

Public API: `fit_law`, `FitResult`, `fit_table`, `fit_table_results` (the one grouped-fitting function),
`save_fits` / `saved_fit_document`, `isoflop` / `plot_isoflop`, `list_laws` — resolved lazily (PEP 562)
so that `clipscale --help`, which imports `clipscale.fit.cli`, does not import numpy, scipy and pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_API = {
    "FitResult": "clipscale.fit.result",
    "fit_law": "clipscale.fit.result",
    "fit_table": "clipscale.fit.table",
    "list_laws": "clipscale.fit.laws",
    "fit_table_results": "clipscale.fit.table",
    "isoflop": "clipscale.fit.analyses.isoflop",
    "plot_isoflop": "clipscale.fit.analyses.isoflop",
    "save_fits": "clipscale.fit.result",
    "saved_fit_document": "clipscale.fit.result",
}
__all__ = [
    "FitResult",
    "fit_law",
    "fit_table",
    "fit_table_results",
    "isoflop",
    "list_laws",
    "plot_isoflop",
    "save_fits",
    "saved_fit_document",
]

if TYPE_CHECKING:
    from clipscale.fit.analyses.isoflop import isoflop, plot_isoflop
    from clipscale.fit.laws import list_laws
    from clipscale.fit.result import FitResult, fit_law, save_fits, saved_fit_document
    from clipscale.fit.table import fit_table, fit_table_results


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'clipscale.fit' has no attribute {name!r}")
