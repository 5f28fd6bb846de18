"""SummaryRow: the flat dict report.py reads, with unset optional fields left out."""

from __future__ import annotations

import doctest

import pytest

import workbench.results.rows as rows_module
from workbench.core.errors import ConfigError
from workbench.results.rows import SummaryRow, row_dict


def test_to_dict_keeps_given_fields_in_order_then_details():
    row = SummaryRow("blocks.0.hook_resid_post", "shift alignment", "cos", 0.8, ci=[0.7, 0.9], control="control student",
                     control_value=0.1, details={"control_ci": [0.0, 0.2], "cos other~teacher": 0.05})
    assert list(row.to_dict().items()) == [
        ("where", "blocks.0.hook_resid_post"), ("group", "shift alignment"), ("measure", "cos"), ("value", 0.8),
        ("ci", [0.7, 0.9]), ("control", "control student"), ("control_value", 0.1),
        ("control_ci", [0.0, 0.2]), ("cos other~teacher", 0.05)]


def test_none_is_kept_and_unset_is_left_out():
    row = SummaryRow("h", "screening", "AUROC", 0.6, sd=None, control_value=None)
    assert row.to_dict() == {"where": "h", "group": "screening", "measure": "AUROC", "value": 0.6, "sd": None,
                             "control_value": None}
    assert "clears" not in row.to_dict() and "control" not in row.to_dict()


def test_from_dict_round_trip_and_row_dict():
    flat = {"where": "w", "group": "g", "measure": "m", "value": 1.0, "clears": True, "null_band": 0.1}
    row = SummaryRow.from_dict(flat)
    assert row.clears is True and row.details == {"null_band": 0.1} and row.to_dict() == flat
    assert row_dict(row) == flat and row_dict(flat) == flat


def test_details_may_not_repeat_schema_fields():
    with pytest.raises(ConfigError, match="control_value"):
        SummaryRow("w", "g", "m", 1.0, details={"control_value": 2.0})


def test_doctest():
    assert doctest.testmod(rows_module).failed == 0
