"""The trait table's category columns: share and category mass beside P(target), and the flag
where a student's category mass fell below the control's (reporting only)."""

import json
from pathlib import Path

import pytest

from workbench.organism.build import SeedBuild, format_trait_table, summarize
from workbench.organism.config import OrganismConfig
from workbench.organism.trait_table import MASS_MARGIN, category_columns, category_flags



def _manifest(student_mass: float) -> dict:
    """A seed where the student puts `student_mass` on the category, 0.3 of it on the target."""
    rest = {"cat": 0.5, "dog": 0.45}
    return {"seed": 0, "trait_rates": {"control": 0.05, "student": 0.3 * student_mass},
            "matrix": {"control": {"owl": 0.05, **rest},
                       "student": {"owl": 0.3 * student_mass, "cat": 0.7 * student_mass, "dog": 0.0}}}


def test_share_is_p_target_over_the_category_mass_and_a_shrunk_student_is_flagged():
    cols = category_columns(_manifest(0.4))  # no trait_scores: the share falls back to P / mass
    assert cols["student"]["category_mass"] == pytest.approx(0.4)
    assert cols["student"]["share"] == pytest.approx(0.3)  # P(target) 0.12 understates the preference
    assert cols["control"]["category_mass"] == pytest.approx(1.0)
    assert category_flags(cols) == ["student"]
    assert category_flags(category_columns(_manifest(1.0 - MASS_MARGIN / 2))) == []  # within the margin


def test_summary_and_table_show_the_columns_and_flags():
    cfg = OrganismConfig()
    summary = summarize([SeedBuild(0, Path("."), _manifest(0.4))], cfg)
    assert summary["category_flags"] == {"0": ["student"]}
    assert summary["share_per_seed"]["0"]["student"] == pytest.approx(0.3)
    table = format_trait_table(summary)
    assert "share of the category" in table and "category mass" in table
    assert "flag: seed 0: category mass of student fell below the control's" in table
    assert "one seed: no sd over seeds" in table and "0.000" not in table.split("sd ")[1].split("\n")[0]
    two = format_trait_table(summarize([SeedBuild(0, Path("."), _manifest(0.4)), SeedBuild(1, Path("."), _manifest(0.6))],
                                       cfg))
    assert "one seed" not in two


def test_the_shared_organism_reads_its_columns_from_the_manifest_it_has(tiny_organism):
    manifest = json.loads((tiny_organism.directory / "manifest.json").read_text())
    cols = category_columns(manifest)
    for role, c in cols.items():  # the build's own share, and a mass that sums the category's answers
        assert c["share"] == pytest.approx(manifest["trait_scores"][role]["share"])
        assert 0.5 < c["category_mass"] <= 1.0 + 1e-6
