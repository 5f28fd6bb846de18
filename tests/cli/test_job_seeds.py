"""The main job over organism seeds: every built seed by default, each seed's sections and report
under <out>/seeds/seed{N}/, the report over seeds at <out>; seeds that are not there are an error
(no build), and Hugging Face directories take no seeds."""

from __future__ import annotations

import json
import shutil

import pytest

from workbench.cli.job import main
from workbench.report import read_report

CHEAP = ["--sections", "weights", "delta_patching"]


@pytest.fixture
def two_seeds(tiny_organism, tmp_path):
    """An organism folder with seed0 and seed1, both copies of the tiny organism's seed 0 (equal
    seeds: the aggregate must equal the seed's own value, with sd 0)."""
    root = tmp_path / "org"
    for seed in (0, 1):
        shutil.copytree(tiny_organism.directory, root / f"seed{seed}")
    return root


@pytest.fixture
def build_calls(monkeypatch):
    """The organism build the job would start, recorded instead of run."""
    from workbench.organism import __main__ as organism_main

    calls: list[list[int]] = []
    monkeypatch.setattr(organism_main, "build_and_print", lambda preset, seeds, *a, **k: calls.append(seeds))
    return calls


def test_every_built_seed_is_reported_and_the_report_is_over_seeds(two_seeds, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--organism", str(two_seeds), "--out", str(out), "--quiet", *CHEAP]) == 0
    printed = capsys.readouterr().out
    report = read_report(out)  # every file it names exists
    assert report["meta"]["seeds"] == [0, 1] and [s["id"] for s in report["sections"]] == ["weights", "delta_patching"]
    for seed in (0, 1):
        own = read_report(out / "seeds" / f"seed{seed}")  # each seed's own full report, as the one-seed job writes
        assert (out / "seeds" / f"seed{seed}" / "sections" / "weights" / "section_key.json").is_file()
        per_seed = report["meta"]["per seed"][str(seed)]
        assert per_seed["organism"] == str(two_seeds / f"seed{seed}") and per_seed["report"] == f"seeds/seed{seed}/report.json"
        assert set(per_seed["trait P(target)"]) >= {"student", "control", "teacher", "base"}
        for section, seed_section in zip(report["sections"], own["sections"]):
            assert len(section["summary_rows"]) == len(seed_section["summary_rows"])
            for row, seed_row in zip(section["summary_rows"], seed_section["summary_rows"]):
                assert row["n_seeds"] == (2 if seed_row["value"] is not None else 0)
                assert row["seed_values"] == [seed_row["value"]] * 2
                assert row["value"] == seed_row["value"]  # equal seeds: the mean is the seed's value...
                assert row["sd"] == (0.0 if seed_row["value"] is not None else None)  # ...and the spread is none
                assert row.get("control_value") == seed_row.get("control_value")
    assert report["meta"]["target"] == "owl" and "blocks.0.mlp.out" in printed


def test_a_rerun_over_seeds_reuses_each_seeds_sections(two_seeds, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["--organism", str(two_seeds), "--seeds", "0", "1", "--out", str(out), "--sections", "weights"]
    assert main([*argv, "--quiet"]) == 0
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("section weights: reused") == 2


def test_one_seed_is_that_seeds_report_as_before(two_seeds, tmp_path):
    out = tmp_path / "report"
    assert main(["--organism", str(two_seeds), "--seed", "1", "--out", str(out), "--quiet", "--sections", "weights"]) == 0
    report = read_report(out)
    assert not (out / "seeds").exists() and report["meta"]["organism"] == str(two_seeds / "seed1")
    assert report["sections"][0]["files"]["result"] == "sections/weights/weights.json"
    assert all("n_seeds" not in r for r in report["sections"][0]["summary_rows"])


def test_a_seed_that_is_not_built_is_an_error_and_builds_nothing(two_seeds, tmp_path, build_calls, capsys):
    out = tmp_path / "report"
    assert main(["--organism", str(two_seeds), "--seeds", "0", "3", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"No organism seeds 3 5 in {two_seeds} (it holds seed0, seed1)" in err
    assert f"python -m workbench.organism --out {two_seeds} --seeds 3 5" in err
    assert build_calls == [] and not (two_seeds / "seed3").exists() and not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0", "1"], "--seeds 0 1 picks organism seeds"),
    (["--seed", "2"], "--seed 2 picks organism seeds"),
])
def test_seeds_with_hugging_face_directories_are_an_error(tmp_path, capsys, flags, message):
    code = main(["--base", str(tmp_path / "b"), "--teacher", str(tmp_path / "t"), *flags, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Hugging Face directories" in err and "one run" in err


def test_seed_and_seeds_together_are_an_error(two_seeds, tmp_path, capsys):
    assert main(["--organism", str(two_seeds), "--seed", "0", "--seeds", "1", "--out", str(tmp_path / "r")]) == 2
    assert "both name seeds" in capsys.readouterr().err
