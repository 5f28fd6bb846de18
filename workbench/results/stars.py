"""Stars: whether a summary row clears its control, and how firmly.

A row is starred (`Star.CLEARS`, "*") only when it clears its control with an interval: the
section's own rule or its interval's lower end (`ci`), else value - 2 sd, above the control's
value; the section names its strongest fair control in `control` / `control_value` (e.g.
bag-of-tokens for data-source probes). A row that clears on its point value alone, from one seed
with no interval (no `sd`, no `ci`, `n_seeds` absent or 1), is `Star.SINGLE` ("°": single seed,
no interval), never a star. A row aggregated over seeds (`n_seeds` > 1) carries `clears` from
`results.seed_rows.clears_over_seeds`: cleared in every seed, each with its own interval or else
with the 95% t interval of value - control over seeds above 0; and `sd` over seeds.

>>> star({"value": 0.62, "sd": 0.01, "control_value": 0.50}), star({"value": 0.62, "sd": 0.01, "control_value": 0.60})
(<Star.CLEARS: 'clears'>, <Star.FAILS: 'fails'>)
>>> star({"value": 0.9, "control_value": 0.1, "clears": True}), star({"value": 0.9, "clears": True, "n_seeds": 3, "sd": 0.1})
(<Star.SINGLE: 'single'>, <Star.CLEARS: 'clears'>)
"""

from __future__ import annotations

import enum
import math
from typing import Any


class Star(str, enum.Enum):
    """A row's standing against its control."""

    CLEARS = "clears"  # clears with an interval (over seeds, folds or a bootstrap): starred
    SINGLE = "single"  # clears on its point value only: one seed, no interval
    FAILS = "fails"  # does not clear
    NO_CONTROL = "no control"  # no control, or an undefined value


MARK = {Star.CLEARS: "*", Star.SINGLE: "°", Star.FAILS: "", Star.NO_CONTROL: ""}
LEGEND = ("* clears its strongest control with an interval (lower end, or value - 2 sd, above the control; or the "
          "section's own rule with an interval; over seeds: in every seed, each with its own interval or with the 95% t "
          "interval of value - control over seeds above 0); ° clears on its point value only (single seed, no interval: not a "
          "star); n/a: not defined here (e.g. a cosine where a model did not move, a recovered fraction without an "
          "effect to recover)")


def number(v: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN and missing values are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def uncertainty(row: dict[str, Any]) -> float | None:
    """The row's `sd`, else half the width of its interval `ci` ([lo, hi]), else None."""
    sd = number(row.get("sd"))
    if sd is not None:
        return sd
    ci = row.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in (number(ci[0]), number(ci[1])):
        return (float(ci[1]) - float(ci[0])) / 2
    return None


def clears(row: dict[str, Any]) -> bool | None:
    """Whether the value clears its control: the row's own `clears` when it says, else its interval's
    lower end (`ci`), or value - 2 sd, or the value itself, above `control_value`. None: no control."""
    if isinstance(row.get("clears"), bool):
        return row["clears"]
    value, control = number(row.get("value")), number(row.get("control_value"))
    if value is None or control is None:
        return None
    ci = row.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and number(ci[0]) is not None:
        return float(ci[0]) > control
    sd = number(row.get("sd"))
    return value - 2 * sd > control if sd is not None else value > control


def n_seeds(row: dict[str, Any]) -> int:
    """Seeds a row aggregates (`n_seeds`; a row without it is one seed)."""
    n = row.get("n_seeds")
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def star(row: dict[str, Any]) -> Star:
    """The row's standing (see the module docstring)."""
    ok = clears(row)
    if ok is None:
        return Star.NO_CONTROL
    if not ok:
        return Star.FAILS
    if n_seeds(row) > 1 or uncertainty(row) is not None:
        return Star.CLEARS
    return Star.SINGLE


def margin(row: dict[str, Any]) -> float:
    """How far a row's value sits above its control (its value when it has no numeric control)."""
    value, control = number(row.get("value")), number(row.get("control_value"))
    if value is None:
        return -math.inf
    return value - control if control is not None else value
