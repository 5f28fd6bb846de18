"""Every entry point documents itself with --help and exits 0."""

import importlib

import pytest

ENTRY_POINTS = [
    "workbench.probe", "workbench.organism.__main__", "workbench.organism.digits", "workbench.bench",
    "workbench.compare", "workbench.localise", "workbench.alignment", "workbench.screening",
    "workbench.capture.__main__", "workbench.align_rows", "workbench.steering", "workbench.channels",
    "workbench.sweep",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--device" in out


def test_probe_rejects_unknown_target_before_any_work(capsys):
    from workbench.cli.job import main

    assert main(["--target", "zebra", "--organism", "/nonexistent/never-built"]) == 2
    assert "Unknown target 'zebra'" in capsys.readouterr().err


def test_channels_rejects_a_missing_organism_and_unknown_tests(capsys):
    from workbench.cli.channels import main

    assert main(["--organism", "/nonexistent/never-built", "--seeds", "0"]) == 2
    assert "never-built" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--tests", "frequency"])
    assert "invalid choice: 'frequency'" in capsys.readouterr().err


@pytest.mark.parametrize("module, sub", [("workbench.sweep", "merge"), ("workbench.organism.__main__", "export"),
                                         ("workbench.organism.__main__", "upgrade")])
def test_subcommand_help(module, sub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([sub, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: python -m {module.removesuffix('.__main__')} {sub}" in capsys.readouterr().out
