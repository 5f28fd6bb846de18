"""`SummaryRow`: the one row schema every section's `summary_rows()` returns, aggregates included.

A row is the strongest evidence at one place beside its control: `where` (hook, parameter
group or layer), `group` (a sub-analysis of the section, e.g. a probe task), `measure` (what
the value is, with its unit), `value`; optionally `sd` or `ci` ([lo, hi]) for its uncertainty,
`control` (the baseline's name), `control_value` (the baseline's value in the same unit) and
`clears` (whether the value clears its control, where the section has its own rule). Anything
else a section adds rides in `details`, in the order given.

`to_dict()` is the flat dict report.py reads and `report.json` stores. An optional field that
was not given is left out of it (report.py reads a missing `control_value` differently from a
`None` one: no control column versus an undefined control), so the fields default to `UNSET`.

>>> SummaryRow("blocks.0.hook_resid_post", "probe", "AUROC", 0.71, control="shuffled", control_value=0.5,
...            details={"n": 200}).to_dict()
{'where': 'blocks.0.hook_resid_post', 'group': 'probe', 'measure': 'AUROC', 'value': 0.71, 'control': 'shuffled', 'control_value': 0.5, 'n': 200}
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""An optional field that was not given (it stays out of `to_dict()`); `None` means "given, undefined"."""

OPTIONAL = ("sd", "ci", "control", "control_value", "clears")
SCHEMA = ("where", "group", "measure", "value", *OPTIONAL)


@dataclass
class SummaryRow:
    """One report row: a value at a place, beside its control (see the module docstring)."""

    where: str
    group: str
    measure: str
    value: Any  # float, or None where undefined (e.g. a recovered fraction without a clear effect)
    sd: float | None | _Unset = UNSET
    ci: list[float | None] | None | _Unset = UNSET
    control: str | None | _Unset = UNSET
    control_value: Any = UNSET
    clears: bool | None | _Unset = UNSET
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.details) & set(SCHEMA))
        if clash:
            from workbench.core.errors import ConfigError

            raise ConfigError(f"SummaryRow details {clash} repeat schema fields; pass them as arguments instead.")

    def to_dict(self) -> dict[str, Any]:
        """The flat dict report.py reads: schema fields (optional ones only when given), then the details."""
        row: dict[str, Any] = {"where": self.where, "group": self.group, "measure": self.measure, "value": self.value}
        row.update((name, getattr(self, name)) for name in OPTIONAL if getattr(self, name) is not UNSET)
        row.update(self.details)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> SummaryRow:
        """The row `to_dict` gave (schema keys become fields, the rest details)."""
        return cls(**{k: row[k] for k in SCHEMA if k in row}, details={k: v for k, v in row.items() if k not in SCHEMA})


def row_dict(row: SummaryRow | dict[str, Any]) -> dict[str, Any]:
    """A summary row as report.py's flat dict (rows of results outside the workbench may be dicts)."""
    return row.to_dict() if isinstance(row, SummaryRow) else dict(row)
