"""The shared command-line helper: one grammar, defaults read from the config dataclasses, one
error path (exit 2, `error: ...`, no traceback), and the seed loop's checks."""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch

from workbench.cli import common
from workbench.cli.common import ConfigFlag, ConfigFlags, organism_seeds, parse_seeds, run
from workbench.core.errors import ArtifactError, ConfigError, DataError

ENTRY_POINTS = [
    "workbench.probe", "workbench.organism.__main__", "workbench.organism.digits", "workbench.bench",
    "workbench.compare", "workbench.localise", "workbench.alignment", "workbench.screening",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_documents_the_same_device_flag(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    assert "--device" in out and "cpu, cuda, cuda:N or auto" in out


# --------------------------------------------------------------------------- flags from dataclasses


def _flag_sets():
    """(name, parser factory, the flags it generates, arguments it requires) for every command."""
    from workbench.cli import alignment, compare, job
    from workbench.organism import __main__ as organism_main
    from workbench.organism.digits import cli as digits

    return [
        ("compare", compare.parser, compare.COMPARE_FLAGS, ["--organism", "x"]),
        ("alignment", alignment.parser, alignment.ALIGNMENT_FLAGS, []),
        ("probe", job.parser, job.JOB_FLAGS, []),
        ("organism", organism_main.parser, organism_main.ORGANISM_FLAGS, []),
        ("digits", digits.parser, digits.DIGITS_FLAGS, []),
    ]


@pytest.mark.parametrize("name", ["compare", "alignment", "probe", "organism", "digits"])
def test_generated_flag_defaults_are_the_dataclass_defaults(name):
    _, make_parser, flags, required = next(s for s in _flag_sets() if s[0] == name)
    args = make_parser().parse_args(required)
    defaults = flags.defaults()
    assert flags.values(args) == defaults
    config = flags.config()  # the dataclass built with no arguments holds the same values
    for field_name, value in defaults.items():
        assert getattr(config, field_name) == value


def test_generated_flags_parse_types_and_go_back_to_the_config():
    from workbench.analyses.alignment import AlignmentConfig
    from workbench.cli.alignment import ALIGNMENT_FLAGS, parser

    args = parser().parse_args(["--max-rows", "300", "--loss", "soft", "--n-random", "2"])
    config = AlignmentConfig(**ALIGNMENT_FLAGS.values(args))
    assert (config.max_rows_per_source, config.loss, config.n_random) == (300, "soft", 2)
    with pytest.raises(SystemExit):
        parser().parse_args(["--loss", "medium"])  # choices come through


@dataclass
class _Example:
    rows: int = 5
    scale: float = 0.5
    names: tuple[str, ...] = ("a", "b")
    limit: int | None = None
    fast: bool = False
    tags: list[str] = field(default_factory=lambda: ["x"])


def test_config_flags_types_tuples_and_help(capsys):
    flags = ConfigFlags(_Example, (
        ConfigFlag("rows", "rows"), ConfigFlag("scale", "scale"), ConfigFlag("names", "names"),
        ConfigFlag("limit", "limit", type=int, default_text="all rows"), ConfigFlag("fast", "fast"),
        ConfigFlag("tags", "tags"),
    ))
    p = common.command_parser("prog", "test")
    flags.add_to(p)
    args = p.parse_args(["--rows", "7", "--scale", "2", "--names", "c", "d", "e", "--limit", "3", "--fast"])
    assert flags.values(args) == {"rows": 7, "scale": 2.0, "names": ("c", "d", "e"), "limit": 3, "fast": True,
                                  "tags": ["x"]}
    assert flags.values(p.parse_args([])) == flags.defaults() == {
        "rows": 5, "scale": 0.5, "names": ("a", "b"), "limit": None, "fast": False, "tags": ["x"]}
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "rows (default: 5)" in out and "names (default: a b)" in out and "limit (default: all rows)" in out


def test_config_flag_for_a_missing_field_names_it():
    with pytest.raises(ConfigError, match="no field 'rowz'"):
        ConfigFlags(_Example, (ConfigFlag("rowz", "typo"),)).add_to(common.command_parser("prog", "test"))


# --------------------------------------------------------------------------- device, seeds


@pytest.mark.parametrize("module", ["workbench.cli.compare", "workbench.cli.alignment", "workbench.cli.localise"])
def test_device_auto_resolves(module):
    p = importlib.import_module(module).parser()
    args = p.parse_args(["--device", "auto", "--organism", "x"])
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert common.device_of(args).type == expected
    assert common.device_of(p.parse_args(["--device", "cpu", "--organism", "x"])) == torch.device("cpu")


def test_unusable_device_is_a_config_error():
    args = common.command_parser("prog", "test")
    common.add_device_flag(args)
    with pytest.raises(ConfigError, match="gpu7"):
        common.device_of(args.parse_args(["--device", "gpu7"]))


def test_seed_grammar():
    assert parse_seeds("3") == [3] and parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-2,5") == [0, 1, 2, 5]
    p = common.command_parser("prog", "test")
    common.add_seeds_flag(p, [0], "seeds")
    assert p.parse_args([]).seeds == [0]
    assert p.parse_args(["--seeds", "1", "2-3", "5,6"]).seeds == [1, 2, 3, 5, 6]
    with pytest.raises(SystemExit):
        p.parse_args(["--seeds", "a"])


def _seed(root, n):
    (root / f"seed{n}").mkdir(parents=True)
    (root / f"seed{n}" / "manifest.json").write_text("{}")


def test_organism_seeds_lists_and_checks_before_any_work(tmp_path):
    for n in (10, 2, 0):
        _seed(tmp_path, n)
    (tmp_path / "seed_old").mkdir()
    (tmp_path / "seed_old" / "manifest.json").write_text("{}")
    assert organism_seeds(tmp_path) == [(0, tmp_path / "seed0"), (2, tmp_path / "seed2"), (10, tmp_path / "seed10")]
    assert organism_seeds(tmp_path, [2, 0]) == [(2, tmp_path / "seed2"), (0, tmp_path / "seed0")]
    with pytest.raises(ArtifactError, match=r"No organism seed 1 3 .*built seeds: 0 2 10"):
        organism_seeds(tmp_path, [0, 1, 3])
    with pytest.raises(ArtifactError, match="No organism seeds in"):
        organism_seeds(tmp_path / "missing")


def test_save_with_figures_writes_result_and_html(tmp_path):
    import plotly.graph_objects as go

    class Result:
        kind = "demo"

        def save(self, directory):
            (directory / "result.json").write_text("{}")
            return directory

        def figures(self):
            return {"bars": go.Figure(go.Bar(x=[1], y=[2]))}

    assert common.save_with_figures(Result(), tmp_path) == tmp_path
    assert (tmp_path / "result.json").is_file() and (tmp_path / "demo_bars.html").is_file()


# --------------------------------------------------------------------------- one error path


def test_run_maps_workbench_errors_to_exit_2(capsys):
    def fails(value):
        raise DataError(f"bad value {value!r}. Fix it.")

    assert run(fails, 3) == 2
    err = capsys.readouterr().err
    assert err == "error: bad value 3. Fix it.\n"
    assert run(lambda: None) == 0 and run(lambda code: code, code=4) == 4


def test_run_reports_a_bug_in_one_paragraph_and_saves_its_traceback(tmp_path, monkeypatch, capsys):
    import workbench.cli.common as common

    monkeypatch.setattr(common, "LOG_DIR", tmp_path / "logs")

    def buggy():
        return 1 / 0

    assert run(buggy) == 1  # a bug is not a user error (2), and no wall of frames
    err = capsys.readouterr().err
    assert "unexpected ZeroDivisionError" in err and "report it" in err and "Traceback" not in err
    saved = list((tmp_path / "logs").glob("*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    assert "ZeroDivisionError" in saved[0].read_text() and "buggy" in saved[0].read_text()


def test_run_maps_os_errors_to_exit_2_naming_the_path(capsys):
    import errno

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/x.json")

    assert run(full_disk) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot use /data/out/x.json: No space left on device (the disk is full")


def test_localise_on_a_missing_folder_exits_2_with_a_clear_message(tmp_path, capsys):
    from workbench.cli.localise import main

    assert main([str(tmp_path / "never-built")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: No organism seeds in") and "never-built" in captured.err
    assert captured.out == ""
    assert main(["--organism", str(tmp_path / "never-built")]) == 2  # the flag grammar works too
    assert "No organism seeds" in capsys.readouterr().err


def test_localise_needs_one_organism(tmp_path, capsys):
    from workbench.cli.localise import main

    for argv in ([], [str(tmp_path / "a"), "--organism", str(tmp_path / "b")]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "organism" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["workbench.compare", "workbench.alignment", "workbench.screening"])
def test_missing_seed_exits_2_before_any_work(module, tmp_path, capsys):
    main = importlib.import_module(module).main
    assert main(["--organism", str(tmp_path), "--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: No organism seed 0 in") and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_an_error_inside_a_command_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "workbench.localise", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
