"""A summary row as text: its place name, its values as printed, what it measures.

Shared by the terminal summary (`workbench/report.py`) and index.html (`report_html.py`).

>>> fmt(0.12345), fmt(None), fmt([0.5, float("nan")])
('0.123', 'n/a', '[0.500, n/a]')
"""

from __future__ import annotations

import math
from typing import Any

from workbench.results.stars import number


def where_of(row: dict[str, Any]) -> str:
    """The row's place name: `where`, else `hook` or `layer` (rows of other conventions)."""
    return str(row.get("where", row.get("hook", row.get("layer", "(overall)"))))


def fmt(v: Any) -> str:
    """A value as printed; `n/a` where it is undefined (None or NaN: see `LEGEND`)."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else "n/a"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def measure_of(row: dict[str, Any], section: str) -> str:
    """The row's `measure`, else its first numeric fields as `name=value` (rows of other conventions)."""
    if "measure" in row:
        return str(row["measure"])
    numeric = [(k, v) for k, v in row.items() if number(v) is not None and k not in ("where", "hook", "layer")]
    return f"{section}: " + ", ".join(f"{k}={fmt(v)}" for k, v in numeric[:3]) if numeric else section
