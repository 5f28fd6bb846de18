"""Counts on the command line are checked by argparse: zero or negative row limits, thread counts
and seeds are usage errors (exit 2) naming the value, never silently clamped (issue 16)."""

from __future__ import annotations

import importlib

import pytest

from workbench.cli import common

CASES = [  # (module, argv, the message's gist)
    ("compare", ["--organism", "x", "--limit", "0"], "--limit: 0 is too small; give a whole number of at least 1"),
    ("compare", ["--organism", "x", "--limit", "-5"], "--limit: -5 is too small"),
    ("compare", ["--organism", "x", "--limit", "two"], "--limit: 'two' is not a whole number"),
    ("compare", ["--organism", "x", "--bootstrap", "-1"], "--bootstrap: -1 is too small; give a whole number of at least 0"),
    ("alignment", ["--max-rows", "-1"], "--max-rows: -1 is too small"),
    ("alignment", ["--max-rows", "0"], "--max-rows: 0 is too small"),
    ("alignment", ["--n-random", "-3"], "--n-random: -3 is too small"),
    ("localise", ["x", "--threads", "0"], "--threads: 0 is too small"),
    ("organism", ["--seeds", "-1"], "seed -1 is negative; seeds are whole numbers of at least 0"),
    ("organism", ["--seeds", "0,-2"], "seed -2 is negative"),
    ("probe", ["--max-rows", "0"], "--max-rows: 0 is too small"),
    ("probe", ["--batch-size", "-8"], "--batch-size: -8 is too small"),
]


@pytest.mark.parametrize(("module", "argv", "message"), CASES, ids=[f"{m}{' '.join(a)}" for m, a, _ in CASES])
def test_bad_count_is_a_usage_error_naming_the_value(module, argv, message, capsys):
    main = importlib.import_module(f"workbench.{module}").main if module != "organism" else \
        importlib.import_module("workbench.organism.__main__").main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_positive_and_nonnegative_int_accept_good_values():
    assert common.positive_int("1") == 1 and common.positive_int("250") == 250
    assert common.nonnegative_int("0") == 0
    assert common.parse_seeds("0-2,5") == [0, 1, 2, 5]


def test_localise_on_a_missing_folder_exits_2_with_a_message(tmp_path, capsys):
    from workbench.cli.localise import main

    assert main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "No organism seeds in" in err and "nowhere" in err and "python -m workbench.organism" in err
