"""The trait table's category columns: beside P(target), the target's share of the category and
the category's mass, with a flag where a student's category mass fell below the control's.

A student that stops answering with the category at all (part of its mass going to number
tokens) has a P(target) that understates its preference: its share, P(target) / P(any answer
of the category), does not. Both come from what the build already measured (the manifest's
`trait_scores` share, and its `matrix` of P(answer) for every member of the category, whose sum
is the category mass), so this is reporting only: no model, cache key or manifest changes.

>>> m = {"trait_rates": {"control": 0.1, "student": 0.2}, "trait_scores": {"control": {"share": 0.1},
...      "student": {"share": 0.4}}, "matrix": {"control": {"owl": 0.1, "cat": 0.9}, "student": {"owl": 0.2, "cat": 0.3}}}
>>> category_columns(m)["student"], category_flags(category_columns(m))
({'p_target': 0.2, 'share': 0.4, 'category_mass': 0.5}, ['student'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLAGGED_ROLES = ("student", "other", "cross")
"""Students whose category mass is checked against the control student's."""
MASS_MARGIN = 0.01
"""How far below the control's a student's category mass must be to be flagged (probability
mass: smaller gaps are within the spread of the organism's unchanged roles)."""


def category_columns(manifest: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """role -> {p_target, share, category_mass} from a seed manifest (None where it lacks them)."""
    scores, matrix = manifest.get("trait_scores") or {}, manifest.get("matrix") or {}
    out = {}
    for role, p in manifest["trait_rates"].items():
        mass = float(sum(matrix[role].values())) if role in matrix else None
        share = scores.get(role, {}).get("share")
        if share is None and mass:
            share = p / mass
        out[role] = {"p_target": float(p), "share": None if share is None else float(share), "category_mass": mass}
    return out


def category_flags(columns: Mapping[str, Mapping[str, float | None]], margin: float = MASS_MARGIN) -> list[str]:
    """Students whose category mass is below the control's by more than `margin`."""
    ref = columns.get("control", {}).get("category_mass")
    if ref is None:
        return []
    return [r for r in FLAGGED_ROLES
            if (m := columns.get(r, {}).get("category_mass")) is not None and m < ref - margin]


def category_summary(manifests: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """seed -> manifest -> the summary's category part: per-seed share and category mass by role,
    and the flagged students per seed (seeds without a flag left out)."""
    cols = {s: category_columns(m) for s, m in manifests.items()}
    return {
        "share_per_seed": {str(s): {r: c["share"] for r, c in cs.items()} for s, cs in cols.items()},
        "category_mass_per_seed": {str(s): {r: c["category_mass"] for r, c in cs.items()} for s, cs in cols.items()},
        "category_flags": {str(s): f for s, cs in cols.items() if (f := category_flags(cs))},
        "category_flag_margin": MASS_MARGIN,
    }


def format_category_lines(summary: Mapping[str, Any], roles: list[str], width: int) -> list[str]:
    """Share and category-mass rows per seed for the CLI's trait table, then the flags."""
    lines = []
    for key, label in (("share_per_seed", "share of the category: P(target) / P(category)"),
                       ("category_mass_per_seed", "category mass: P(any answer of the category)")):
        if key not in summary:
            continue
        lines.append(label)
        for seed, vals in summary[key].items():
            lines.append(f"{seed:>4}  " + "  ".join(
                f"{vals[r]:{width}.3f}" if vals.get(r) is not None else "n/a".rjust(width) for r in roles))
    for seed, roles_flagged in summary.get("category_flags", {}).items():
        lines.append(f"flag: seed {seed}: category mass of {', '.join(roles_flagged)} fell below the control's by more "
                     f"than {summary.get('category_flag_margin', MASS_MARGIN)}: read the share, not P(target)")
    return lines
