"""One report section over seeds: each seed's result for the same section combined into one Result.

The training run (seed) is the unit of uncertainty (DESIGN.md section 5), so the main job over
several organism seeds reports every section as an aggregate. `SeedsResult.combine` takes the
seeds' results of one section (same kind) and keeps the Result contract (results/base.py):

- `summary_rows()`: one row per (where, group, measure) (the k-th row with that key in one seed
  matches the k-th in another), with the row contract's keys (rows.py) meaning, over seeds:
  `value` the mean over the seeds where it is defined (`over_seeds`), `sd` the sample sd over
  those seeds (None with fewer than two), `control` the first seed's name for it,
  `control_value` the mean of the seeds' control values, and `clears` True only when the row
  clears its control in every seed that has it (each seed judged by the report's rule,
  `workbench.report.clears`: the section's own `clears`, else its interval or sd against its
  control) *and* firmly (`clears_over_seeds`): every seed with an interval of its own, or else
  the two-sided 95% t interval of value - control over seeds (`margin_ci`) above 0. `clears` is left out where no seed
  has a verdict (no control). The seeds' own `ci` is left out: the spread is over seeds.
  Three keys are added: `n_seeds` (int: the seeds whose value is defined, what `value` and `sd`
  are over), `seed_values` (every seed's value, in the order of `seeds`, None where a seed lacks
  the row or its value is undefined) and `margin_ci` (the t interval of value - control over
  seeds, where two or more seeds have both). Other keys (details) are kept where equal in every seed
  that has the row, else averaged when numbers, else listed per seed (in the order of `seeds`).
  Rows present in only some seeds are aggregated over the seeds that have them.
- `figures()`: the first seed's figures, each title saying which seed it shows.
- `save(dir)`: `<dir>/over_seeds.json`: the aggregate rows, the seeds, the section's kind and
  title, the seeds' result class, and where each seed's own result is (relative to `dir`), so
  `load` finds the first seed's result for the figures.

>>> a = [{"where": "h", "group": "g", "measure": "AUROC", "value": 0.6, "control_value": 0.5, "clears": True}]
>>> b = [{"where": "h", "group": "g", "measure": "AUROC", "value": 0.8, "control_value": 0.5, "clears": True}]
>>> row = combine_rows([a, b])[0]
>>> round(row["value"], 6), round(row["sd"], 6), row["control_value"], row["n_seeds"], row["seed_values"]
(0.7, 0.141421, 0.5, 2, [0.6, 0.8])
>>> row["clears"], [round(x, 3) for x in row["margin_ci"]]  # both seeds clear, but two seeds this far apart do not agree firmly
(False, [-1.071, 1.471])
"""

from __future__ import annotations

import importlib
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.errors import ArtifactError, ConfigError
from workbench.results.base import Result, read_result_record, write_result_files
from workbench.results.figures import add_title_note
from workbench.results.rows import SCHEMA, SummaryRow, row_dict
from workbench.results.seeds import over_seeds, paired_interval
from workbench.results.stars import Star, star

SEEDS_KIND = "over_seeds"
"""The file kind of an aggregate (`<dir>/over_seeds.json`): never a section's own `<kind>.json`,
so an aggregate saved where a single-seed run saved that section leaves the seed's files intact."""
ADDED = ("n_seeds", "seed_values", "margin_ci")
"""The keys an aggregate row has beyond the row contract."""


def _number(v: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN and missing values are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def clears_over_seeds(verdicts: Sequence[bool | None], interval: tuple[float, float] | None,
                      firm: Sequence[bool]) -> bool:
    """The over-seeds rule: every seed's row clears its control, and firmly: each seed with an
    interval of its own (`firm`: a star in that seed's report), or else the t interval of
    value - control over seeds (`interval`, two or more seeds with both numbers) lies above 0.
    Clearing on point values in every seed is not enough: three null seeds do that one time in eight.
    One seed alone keeps its own verdict.

    >>> clears_over_seeds([True] * 3, (0.01, 0.2), [False] * 3), clears_over_seeds([True] * 3, (-0.1, 0.2), [False] * 3)
    (True, False)
    >>> clears_over_seeds([True] * 2, None, [True, True]), clears_over_seeds([True, True], None, [True, False])
    (True, False)
    >>> clears_over_seeds([True, None], (0.1, 0.2), [True, False])  # a seed without a verdict has not cleared
    False
    """
    if not verdicts or not all(v is True for v in verdicts):
        return False
    if len(verdicts) == 1:  # one seed holds the row: its own verdict (its n_seeds 1 marks it in the report)
        return True
    return all(firm) or (interval is not None and interval[0] > 0)


def _combine_detail(values: list[Any], present: list[bool]) -> Any:
    """A detail over the seeds that have it: as is when equal everywhere, the mean when numbers,
    else every seed's value (None where a seed lacks it)."""
    given = [v for v, p in zip(values, present) if p]
    if all(v == given[0] for v in given):
        return given[0]
    numbers = [_number(v) for v in given]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given):
        return over_seeds(numbers).mean
    return [v if p else None for v, p in zip(values, present)]


def combine_row(rows: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """One aggregate row from each seed's row at one (where, group, measure) (None: the seed lacks
    it; at least one is given). See the module docstring for what each key means."""
    present = [r for r in rows if r is not None]
    if not present:
        raise ConfigError("combine_row needs at least one seed's row.")
    first = present[0]
    values = over_seeds([_number(r.get("value")) if r is not None else None for r in rows])
    out: dict[str, Any] = {"where": first.get("where"), "group": first.get("group"), "measure": first.get("measure"),
                           "value": values.mean, "sd": values.sd}
    if any("control" in r for r in present):
        out["control"] = next(r["control"] for r in present if "control" in r)
    if any("control_value" in r for r in present):
        out["control_value"] = over_seeds([_number(r.get("control_value")) for r in present]).mean
    standings = [star(r) for r in present]  # each seed by the report's rule (`stars.clears` inside `star`)
    verdicts = [None if s is Star.NO_CONTROL else s is not Star.FAILS for s in standings]
    interval = paired_interval([_number(r.get("value")) for r in present],
                               [_number(r.get("control_value")) for r in present])
    if interval is not None:
        out["margin_ci"] = list(interval)
    if any(v is not None for v in verdicts):
        out["clears"] = clears_over_seeds(verdicts, interval, [s is Star.CLEARS for s in standings])
    extra = [k for k in dict.fromkeys(k for r in present for k in r) if k not in SCHEMA and k not in ADDED]
    for key in extra:
        has = [r is not None and key in r for r in rows]
        out[key] = _combine_detail([r.get(key) if r is not None else None for r in rows], has)
    out["n_seeds"] = values.n
    out["seed_values"] = values.per_seed
    return out


def combine_rows(per_seed: Sequence[Sequence[SummaryRow | dict[str, Any]] | None]) -> list[dict[str, Any]]:
    """Each seed's summary rows of one section (None: the seed has no result for it) -> the
    aggregate rows, in the order rows first appear (first seed first)."""
    n = len(per_seed)
    keyed: dict[tuple[str, str, str, int], list[dict[str, Any] | None]] = {}
    for i, rows in enumerate(per_seed):
        seen: Counter[tuple[str, str, str]] = Counter()
        for row in rows or ():
            r = row_dict(row)
            base = (str(r.get("where")), str(r.get("group")), str(r.get("measure")))
            keyed.setdefault((*base, seen[base]), [None] * n)[i] = r
            seen[base] += 1
    return [combine_row(rows) for rows in keyed.values()]


def _class_spec(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _result_class(spec: str) -> type:
    """The result class `module:QualName`, imported only from the workbench."""
    module, _, qualname = spec.partition(":")
    if not module.startswith("workbench.") or not qualname:
        raise ArtifactError(f"{spec!r} is not a workbench result class; the aggregate was written by something else.")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class SeedsResult:
    """A section over seeds (see the module docstring). `kind` and `title` are the section's own,
    so the report lists it as that section; the file it saves is `over_seeds.json`."""

    kind: str
    title: str
    command: str
    seeds: list[int]
    rows: list[dict[str, Any]]
    result_class: str  # module:QualName of the seeds' results
    seed_dirs: dict[int, Path]  # each seed's own saved result (relative to the aggregate's folder once saved)
    first: Result | None = field(default=None, repr=False)  # the first seed's result (its figures), not saved

    @classmethod
    def combine(cls, results: Sequence[Result | None], seeds: Sequence[int],
                seed_dirs: Sequence[str | os.PathLike | None], command: str = "") -> SeedsResult:
        """Each seed's result of one section (None where a seed has none) and where each is saved."""
        given = [(s, r, d) for s, r, d in zip(seeds, results, seed_dirs, strict=True) if r is not None]
        if not given:
            raise ConfigError("SeedsResult.combine needs at least one seed's result.")
        kinds = {r.kind for _, r, _ in given}
        if len(kinds) > 1:
            raise ConfigError(f"SeedsResult.combine got results of kinds {sorted(kinds)}; combine one section at a time.")
        first = given[0][1]
        rows = combine_rows([list(r.summary_rows()) if r is not None else None for r in results])
        return cls(kind=first.kind, title=first.title, command=command or first.command, seeds=list(seeds), rows=rows,
                   result_class=_class_spec(type(first)), first=first,
                   seed_dirs={s: Path(d) for s, _, d in given if d is not None})

    def summary_rows(self) -> list[SummaryRow]:
        return [SummaryRow.from_dict(r) for r in self.rows]

    def _first_result(self) -> Result:
        if self.first is None:
            seed = next((s for s in self.seeds if s in self.seed_dirs), None)
            if seed is None:
                raise ArtifactError(f"The {self.kind!r} aggregate names no seed's result to draw figures from.")
            self.first = _result_class(self.result_class).load(self.seed_dirs[seed])
        return self.first

    def figures(self) -> dict[str, Any]:
        """The first seed's figures, each title saying which seed it shows."""
        seed = next((s for s in self.seeds if s in self.seed_dirs), self.seeds[0])
        figures = self._first_result().figures()
        note = f"seed {seed} of seeds {' '.join(map(str, self.seeds))}; the table is over seeds"
        for fig in figures.values():
            add_title_note(fig, note)
        return figures

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `<dir>/over_seeds.json` (each seed's result named relative to `dir`)."""
        directory = Path(directory)
        dirs = {str(s): Path(os.path.relpath(os.path.abspath(d), os.path.abspath(directory))).as_posix()
                for s, d in self.seed_dirs.items()}
        data = {"kind": self.kind, "title": self.title, "command": self.command, "seeds": self.seeds,
                "rows": self.rows, "result_class": self.result_class, "seed_dirs": dirs}
        return write_result_files(directory, SEEDS_KIND, data)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SeedsResult:
        """What `save` wrote (each seed's result folder resolved against `directory`)."""
        record, _ = read_result_record(directory, SEEDS_KIND)
        data = record["data"]
        try:
            return cls(kind=data["kind"], title=data["title"], command=data["command"], seeds=list(data["seeds"]),
                       rows=list(data["rows"]), result_class=data["result_class"],
                       seed_dirs={int(s): Path(directory) / d for s, d in data["seed_dirs"].items()})
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{Path(directory) / SEEDS_KIND}.json is not an aggregate over seeds ({e}). Rerun the "
                                "main job with this version.") from e
