"""Two doors, same numbers: the main job's report on an organism seed (`--organism`) against its
report on the seed exported as Hugging Face directories (`--base/--teacher/--student/--control`
with the export's data, trait, prompts and loss).

`compare_reports(organism_report_dir, hf_report_dir)` matches summary rows by section and by their
text fields (where, group, measure, control, ...), then compares every number both rows carry.
What is not compared is listed, with why:

- `only_organism` rows: the organism lineage holds models the job's four HF flags do not take
  (other, cross: e.g. probes' "other vs base" rows), and sections only the organism path runs
  (screening retrains students with the organism's recipe).
- `one_sided` fields: a number one row has and the other lacks (e.g. weights' "cos other").
- `layout` fields: numbers that depend on how a model stores its weights, not on what it
  computes. `RANDOM_DRAWS`: random-direction controls drawn parameter by parameter from a seeded
  generator (alignment's random directions, delta patching's random Δ): the same seed draws other
  directions when the tensors are stored transposed (GPT-2's Conv1D) or in another order, so these
  differ by sampling noise. (The weights section's output/input subspace overlaps are compared:
  `ParamSpace.stored_in_out` tells GPT-2's [in, out] Conv1D weights from nn.Linear's [out, in].)
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.io import read_json

KEY_FIELDS = ("where", "group", "measure", "control")
RANDOM_DRAWS = ("random_mean", "random Δ")


def _row_key(section: str, row: dict[str, Any]) -> tuple[str, ...]:
    texts = tuple(f"{k}={v}" for k, v in sorted(row.items()) if isinstance(v, str) and k not in KEY_FIELDS)
    return (section, *(str(row.get(k)) for k in KEY_FIELDS), *texts)


def _rows(report_dir: str | os.PathLike) -> dict[tuple[str, ...], dict[str, Any]]:
    report = read_json(Path(report_dir) / "report.json")
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for section in report["sections"]:
        seen: dict[tuple[str, ...], int] = defaultdict(int)
        for row in section["summary_rows"]:
            key = _row_key(section["id"], row)
            seen[key] += 1
            out[(*key, str(seen[key]))] = row
    return out


def layout_dependent(section: str, row: dict[str, Any], name: str) -> bool:
    """Whether field `name` of a row depends on the weights' storage layout (see the module doc)."""
    if name in RANDOM_DRAWS:
        return True
    return name == "control_value" and "random" in str(row.get("control", "")) and section in ("alignment", "delta_patching")


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b)


@dataclass
class SectionDiff:
    """One section's comparison: how many numbers were compared and their max |difference|."""

    n_rows: int = 0
    n_numbers: int = 0
    max_abs_diff: float = 0.0
    worst: str = ""  # the row and field of the largest difference
    flag_mismatches: list[str] = field(default_factory=list)  # boolean fields (clears) that disagree
    layout_max_abs_diff: float = 0.0  # over the layout-dependent fields, not compared
    layout_fields: set[str] = field(default_factory=set)


@dataclass
class TwoDoors:
    """`compare_reports`' answer (see the module doc)."""

    sections: dict[str, SectionDiff]
    only_organism: list[str]
    only_hf: list[str]
    one_sided: set[str]

    def format(self) -> str:
        lines = [f"{'section':22} {'rows':>5} {'numbers':>8} {'max |diff|':>11}  layout-dependent (not compared)"]
        for name, d in self.sections.items():
            layout = f"{d.layout_max_abs_diff:.3g} over {', '.join(sorted(d.layout_fields))}" if d.layout_fields else "-"
            lines.append(f"{name:22} {d.n_rows:>5} {d.n_numbers:>8} {d.max_abs_diff:>11.3g}  {layout}")
            lines += [f"    clears differs: {m}" for m in d.flag_mismatches]
        sections = sorted({k.split(" | ")[0] for k in self.only_organism})
        lines.append(f"rows only through --organism: {len(self.only_organism)} (sections {', '.join(sections)})")
        lines.append(f"rows only through the HF directories: {len(self.only_hf)}")
        if self.one_sided:
            lines.append(f"fields on one side only: {', '.join(sorted(self.one_sided))}")
        return "\n".join(lines)


def compare_reports(organism_dir: str | os.PathLike, hf_dir: str | os.PathLike) -> TwoDoors:
    """Match the two reports' summary rows and compare their numbers (see the module doc)."""
    a, b = _rows(organism_dir), _rows(hf_dir)
    sections: dict[str, SectionDiff] = {}
    one_sided: set[str] = set()
    for key in [k for k in a if k in b]:
        section, ra, rb = key[0], a[key], b[key]
        d = sections.setdefault(section, SectionDiff())
        d.n_rows += 1
        for name in sorted(set(ra) | set(rb)):
            va, vb = ra.get(name), rb.get(name)
            if isinstance(va, bool) or isinstance(vb, bool):
                if va != vb:
                    d.flag_mismatches.append(f"{' | '.join(key[1:4])}: {name} {va} vs {vb}")
                continue
            na, nb = _number(va), _number(vb)
            if (na is None) != (nb is None) and (va is None or vb is None):
                one_sided.add(f"{section}.{name}")
                continue
            if na is None or nb is None:
                continue
            diff = _diff(na, nb)
            if layout_dependent(section, ra, name):
                d.layout_fields.add(name)
                d.layout_max_abs_diff = max(d.layout_max_abs_diff, diff)
                continue
            d.n_numbers += 1
            if diff >= d.max_abs_diff:
                d.max_abs_diff, d.worst = diff, f"{' | '.join(key[1:4])}: {name}"
    only_a = [" | ".join(k[:4]) for k in a if k not in b]
    only_b = [" | ".join(k[:4]) for k in b if k not in a]
    return TwoDoors(sections, only_a, only_b, one_sided)
