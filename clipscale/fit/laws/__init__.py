"""The laws: the registry of law families (`registry.py`: `Law`, `get_law`, `list_laws`, derived
quantities), the term functions of `joint` (`joint.py`), of `offset` and `data-constrained`
(`nonlinear.py`), and which fixed parameters a law accepts (`constraints.py`). numpy only.
"""

from clipscale.fit.laws.registry import (
    LAWS,
    Inputs,
    Law,
    derived_quantities,
    get_law,
    list_laws,
    logsumexp,
    lse_and_jacobian,
)

__all__ = [
    "LAWS",
    "Inputs",
    "Law",
    "derived_quantities",
    "get_law",
    "list_laws",
    "logsumexp",
    "lse_and_jacobian",
]
