"""Parameters shared by several merge methods."""

from __future__ import annotations

from osrm_gui.core.merge.base import Param

DENSITY = Param(
    "density",
    0.5,
    "Fraction of each task vector's entries kept (0 < density ≤ 1).",
    minimum=0.0,
    maximum=1.0,
    min_exclusive=True,
    label="Density (kept fraction)",
)

MAJORITY_SIGN_METHOD = Param(
    "majority_sign_method",
    "total",
    "How the sign of each entry is elected: 'total' = sign of the sum of the weighted "
    "entries, 'frequency' = the sign most tasks have.",
    choices=("total", "frequency"),
    label="Sign election",
)
