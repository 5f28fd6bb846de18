"""The screening defense retrains a student on the tiny organism's screened teacher rows."""

from __future__ import annotations

from workbench.screening import run_screening


def test_screening_retrains_students_on_screened_rows(tiny_organism):
    rows, reference = run_screening(tiny_organism.directory, fractions=(0.25,), overrides={"student_epochs": 1},
                                     max_rows=256)
    assert [(r.fraction, r.dropped) for r in rows] == [(0.25, "top_g_trait"), (0.25, "random")]
    assert rows[0].n_kept == rows[1].n_kept == reference["n_rows"] - round(0.25 * reference["n_rows"])
    assert all(0 < r.p_target < 1 for r in rows)
