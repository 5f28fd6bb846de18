"""One command-line grammar: every entry point that has `--organism`, `--seeds`, `--device`, `--out`,
`--threads` or `--quiet` parses it with the same meaning; a mistyped organism path is an error
(exit 2), never a silent build; a stopped organism build names the command that resumes it.

Parsing is tested on each entry point's parser; the few full `main` calls stop before any model
loads (a wrong path, a monkeypatched build or build stage)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from workbench.cli import common
from workbench.core.errors import ConfigError, DataError
from workbench.core.models import resolve_device


def _localise_parse(argv: list[str]) -> argparse.Namespace:
    from workbench.cli.localise import parse_args

    return parse_args(argv)


def _parse_with(make_parser: Callable[[], argparse.ArgumentParser]) -> Callable[[list[str]], argparse.Namespace]:
    return lambda argv: make_parser().parse_args(argv)


def _entries() -> dict[str, tuple[Callable[[list[str]], argparse.Namespace], list[str], set[str]]]:
    """name -> (parse argv, arguments it requires, the common options it has)."""
    from workbench.benchmarks import harness
    from workbench.cli import align_rows, alignment, capture, compare, job, screening, steering, sweep
    from workbench.organism import __main__ as organism_main
    from workbench.organism.digits import cli as digits

    every = {"organism", "seeds", "device", "out", "threads", "quiet"}
    return {
        "probe": (_parse_with(job.parser), [], every),
        "compare": (_parse_with(compare.parser), ["--organism", "x"], every),
        "localise": (_localise_parse, ["--organism", "x"], every - {"quiet"}),  # no progress to silence
        "alignment": (_parse_with(alignment.parser), [], every),
        "screening": (_parse_with(screening.parser), [], every),
        "organism": (_parse_with(organism_main.parser), [], every - {"organism"}),  # --out is where it builds
        "organism.digits": (_parse_with(digits.parser), [], every - {"organism"}),
        "bench": (_parse_with(harness.parser), ["load"], {"device", "out", "threads"}),  # prints a table, no bars
        "capture": (_parse_with(capture.parser), ["--data", "x.jsonl", "--hooks", "h"], every - {"seeds"}),  # one --seed
        "align_rows": (_parse_with(align_rows.parser), [], every),
        "steering": (_parse_with(steering.parser), [], every),
        "sweep": (_parse_with(sweep.parser), ["--organism", "x"], every),
    }


def _having(option: str) -> list[str]:
    return [name for name, (_, _, has) in _entries().items() if option in has]


@pytest.fixture
def keep_threads():
    """Tests that set torch's thread count give it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- the same options, the same meaning


@pytest.mark.parametrize("option", ["organism", "seeds", "device", "out", "threads", "quiet"])
def test_every_entry_point_that_has_an_option_spells_it_the_same(option):
    for name, (parse, required, has) in _entries().items():
        args = parse(required)
        assert hasattr(args, option) == (option in has), f"{name}: --{option}"


@pytest.mark.parametrize("name", _having("device"))
def test_device_forms_are_accepted_and_resolved_alike(name):
    parse, required, _ = _entries()[name]
    for form in ("cpu", "cuda", "cuda:1", "auto"):
        assert parse([*required, "--device", form]).device == form
    auto = common.device_of(parse([*required, "--device", "auto"]))
    assert auto == resolve_device("auto") and auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.device_count() < 2:
        with pytest.raises(ConfigError, match="cuda:1"):
            common.device_of(parse([*required, "--device", "cuda:1"]))


@pytest.mark.parametrize("name", _having("seeds"))
def test_seed_forms_are_equal_everywhere(name):
    parse, required, _ = _entries()[name]
    forms = (["0-2"], ["0", "1", "2"], ["0,1,2"], ["0", "1-2"])
    assert all(parse([*required, "--seeds", *f]).seeds == [0, 1, 2] for f in forms)
    with pytest.raises(SystemExit) as exit_info:
        parse([*required, "--seeds", "zero"])
    assert exit_info.value.code == 2


# commands whose models are the organism's (the main job's default source among them): 1 thread
ORGANISM_COMMANDS = {"organism", "probe", "compare", "localise", "alignment", "screening", "align_rows", "steering",
                     "sweep"}


@pytest.mark.parametrize("name", _having("threads"))
def test_threads_parse_alike_with_one_default(name, monkeypatch):
    parse, required, _ = _entries()[name]
    assert parse([*required, "--threads", "3"]).threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the default follows OMP_NUM_THREADS where it is set...
    assert common.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # ...else the cores this process may use
    assert common.default_threads() == len(os.sched_getaffinity(0))
    if name == "organism.digits":  # a fixed default: its small MLPs train fastest on one thread
        from workbench.organism.digits.config import DigitsConfig

        assert parse(required).threads == DigitsConfig.threads == 1
    elif name in ORGANISM_COMMANDS:  # the organism's models: 1 thread (measured under contention) unless OMP_NUM_THREADS
        assert parse(required).threads == common.organism_threads() == common.ORGANISM_THREADS == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert parse(required).threads == common.organism_threads() == 3
    else:
        assert parse(required).threads == common.default_threads()
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_info:
            parse([*required, "--threads", bad])
        assert exit_info.value.code == 2


@pytest.mark.parametrize("name", ["out", "quiet", "organism"])
def test_out_quiet_and_organism_take_the_same_values(name):
    for entry in _having(name):
        parse, required, _ = _entries()[entry]
        argv = [a for a in required if a not in ("--organism", "x")] if name == "organism" else required
        value = ["--quiet"] if name == "quiet" else [f"--{name}", "some/dir"]
        assert getattr(parse([*argv, *value]), name) == (True if name == "quiet" else "some/dir"), entry


# --------------------------------------------------------------------------- --threads reaches torch


def _wrong_organism_runs(tmp_path: Path) -> dict[str, list[str]]:
    """argv per entry point that fails fast (exit 2) without loading a model."""
    gone = str(tmp_path / "no-such-organism")
    return {
        "workbench.probe": ["--organism", gone, "--out", str(tmp_path / "report")],
        "workbench.compare": ["--organism", gone],
        "workbench.localise": [gone],
        "workbench.alignment": ["--organism", gone],
        "workbench.screening": ["--organism", gone],
        "workbench.steering": ["--organism", gone],
        "workbench.organism.__main__": ["--target", "zebra", "--out", str(tmp_path / "o")],
        "workbench.organism.digits": ["--device", "gpu7"],
        "workbench.bench": ["no-such-benchmark"],
    }


@pytest.mark.parametrize("module", list(_wrong_organism_runs(Path("/x"))))
def test_threads_sets_torch_threads_while_the_command_runs(module, tmp_path, monkeypatch, capsys):
    import importlib

    main = importlib.import_module(module).main
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    before = torch.get_num_threads()
    assert main([*_wrong_organism_runs(tmp_path)[module], "--threads", "3"]) == 2
    assert calls == [3, before]  # set for the command, given back to an in-process caller after it
    assert capsys.readouterr().err.startswith("error: ")


def test_using_threads_sets_and_restores_torch_threads(keep_threads):
    from workbench.cli.localise import parse_args

    torch.set_num_threads(1)
    with common.using_threads(parse_args(["x", "--threads", "3"])):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1


# --------------------------------------------------------------------------- a wrong path is an error, never a build


@pytest.fixture
def build_calls(monkeypatch):
    """The organism build the job would start, recorded instead of run."""
    from workbench.organism import __main__ as organism_main

    calls: list[dict] = []

    def record(preset_name, seeds, out, device, quiet, *, command=None, **overrides):
        calls.append({"preset": preset_name, "seeds": seeds, "out": out, "command": command})

    monkeypatch.setattr(organism_main, "build_and_print", record)
    return calls


def test_a_mistyped_organism_path_exits_2_and_builds_nothing(tmp_path, build_calls, capsys):
    from workbench.cli.job import main

    typo = tmp_path / "artifacts" / "orgnism"
    assert main(["--organism", str(typo), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: No organism seed 0 in {typo} (it does not exist)")
    assert "Fix --organism" in err and "--build" in err and "artifacts/organism" in err
    assert build_calls == [] and not typo.exists() and not (tmp_path / "report").exists()


def test_a_mistyped_seed_in_a_built_organism_exits_2_naming_the_built_seeds(tmp_path, build_calls, capsys):
    from workbench.cli.job import main

    (tmp_path / "org" / "seed0").mkdir(parents=True)
    (tmp_path / "org" / "seed0" / "manifest.json").write_text("{}")
    assert main(["--organism", str(tmp_path / "org"), "--seed", "7", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "No organism seed 7" in err and "it holds seed0" in err and "Fix --organism or --seed" in err
    assert build_calls == [] and not (tmp_path / "org" / "seed7").exists()


def test_an_unfinished_build_at_another_path_names_the_resume_command(tmp_path, build_calls, capsys):
    from workbench.cli.job import main

    (tmp_path / "org" / "seed0" / "models").mkdir(parents=True)  # a build stopped before its manifest
    assert main(["--organism", str(tmp_path / "org"), "--preset", "tiny", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unfinished organism build" in err
    assert f"python -m workbench.organism --out {tmp_path / 'org'} --seeds 0 --preset tiny" in err
    assert build_calls == []


def test_build_builds_a_new_folder(tmp_path, build_calls, capsys):
    from workbench.cli.job import main

    new = tmp_path / "fresh"
    argv = ["--organism", str(new), "--build", "--preset", "tiny", "--seed", "2", "--out", str(tmp_path / "r")]
    assert main(argv) == 2  # the recorded build wrote nothing, so the job stops after it
    assert build_calls == [{"preset": "tiny", "seeds": [2], "out": str(new),
                            "command": "python -m workbench.probe " + " ".join(argv)}]
    assert "holds no models/ after the build" in capsys.readouterr().err


def test_the_default_folder_is_built_when_it_holds_no_seed(tmp_path, build_calls, monkeypatch, capsys):
    from workbench.cli.job import main

    monkeypatch.chdir(tmp_path)
    assert main(["--out", "r"]) == 2
    assert [c["out"] for c in build_calls] == ["artifacts/organism"]
    (tmp_path / "artifacts" / "organism" / "seed0").mkdir(parents=True)  # now it holds a built seed...
    (tmp_path / "artifacts" / "organism" / "seed0" / "manifest.json").write_text("{}")
    assert main(["--seed", "1", "--out", "r"]) == 2  # ...so a seed it lacks is a typo, not a build
    assert len(build_calls) == 1 and "No organism seed 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- a stopped build names its resume command


def _stop_first_stage(monkeypatch, error: BaseException) -> None:
    from workbench.organism import build

    def stop(self, role, seed):
        raise error

    monkeypatch.setattr(build._Builder, "base", stop)


def test_an_interrupted_organism_build_names_the_same_command(tmp_path, monkeypatch, capsys):
    from workbench.organism.__main__ import main

    _stop_first_stage(monkeypatch, KeyboardInterrupt())
    argv = ["--preset", "tiny", "--out", str(tmp_path / "org"), "--quiet"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: the organism build was interrupted.")
    assert "rerun the same command to resume" in err
    assert f"  python -m workbench.organism --preset tiny --out {tmp_path / 'org'} --quiet" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("error, code", [(DataError("disk data broke"), 2), (RuntimeError("a bug"), 1)])
def test_an_error_mid_build_names_the_resume_command_too(error, code, tmp_path, monkeypatch, capsys):
    from workbench.organism.__main__ import main

    monkeypatch.setattr(common, "LOG_DIR", tmp_path / "logs")  # a bug's traceback goes there
    _stop_first_stage(monkeypatch, error)
    assert main(["--preset", "tiny", "--out", str(tmp_path / "org"), "--quiet"]) == code
    err = capsys.readouterr().err
    assert str(error) in err and f"python -m workbench.organism --preset tiny --out {tmp_path / 'org'} --quiet" in err


def test_an_interrupted_build_started_by_the_job_names_the_job_command(tmp_path, monkeypatch, capsys):
    from workbench.cli.job import main

    _stop_first_stage(monkeypatch, KeyboardInterrupt())
    argv = ["--organism", str(tmp_path / "org"), "--build", "--preset", "tiny", "--out", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 130
    assert f"  python -m workbench.probe {' '.join(argv)}" in capsys.readouterr().err


def test_build_command_rebuilds_the_same_organism():
    from workbench.organism.__main__ import build_command, parser

    command = build_command("hard", [0, 2], "artifacts/organism-hard", "cuda:1", target="oak", n_prompts=None)
    assert command == ("python -m workbench.organism --out artifacts/organism-hard --seeds 0 2 --preset hard "
                       "--device cuda:1 --target oak")
    args = parser().parse_args(command.split()[3:])
    assert (args.out, args.seeds, args.preset, args.device, args.target) == (
        "artifacts/organism-hard", [0, 2], "hard", "cuda:1", "oak")


def test_localise_on_a_wrong_path_exits_2(tmp_path, capsys):
    from workbench.cli.localise import main

    assert main([str(tmp_path / "typo")]) == 2
    assert main(["--organism", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: No organism seeds in") == 2 and "typo" in err
    assert not (tmp_path / "typo").exists()


def test_each_preset_builds_into_its_own_default_folder(build_calls):
    from workbench.cli import screening
    from workbench.organism.__main__ import main

    assert main(["--preset", "hard"]) == 0 and main([]) == 0 and main(["--preset", "tiny", "--out", "x"]) == 0
    assert [c["out"] for c in build_calls] == ["artifacts/organism-hard", "artifacts/organism", "x"]
    assert screening.parser().parse_args([]).organism == "artifacts/organism-hard"  # what screening reads


def test_digits_saves_by_default():
    from workbench.organism.digits import cli as digits

    assert digits.parser().parse_args([]).out == "artifacts/digits"  # it used to save nothing unless told
