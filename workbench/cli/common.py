"""What every `python -m workbench.X` command shares: its flags, its device, its seed loop, how it
saves a result, and how it fails.

- `command_parser` and the `add_*_flag` functions give every command one grammar: `--device`
  (cpu, cuda, cuda:N or auto), `--quiet`, `--out DIR`, `--seeds N [N ...]` (also `0,1,2` and
  `0-4`) where it loops over seeds, `--organism DIR` where it reads an organism, `--threads N`
  (torch CPU threads; `run` sets them while the body runs).
- `ConfigFlags` adds flags whose defaults (and types) are read from a config dataclass, so a
  default is written once, in the dataclass; `values(args)` gives them back as its fields.
- `organism_seeds` lists the seed directories a command loops over, all checked before any work.
- `show_progress(args)` and `stage_log(quiet)`: progress bars on a terminal, widgets in a notebook,
  and elsewhere (CI logs) a line per long stage with elapsed time and an estimate of what remains.
- `save_with_figures` saves one result and writes its HTML figures beside it.
- `run(body, ...)` runs a command's body: a `WorkbenchError` (or an OSError such as a full
  disk) becomes `error: <message>` on stderr and exit code 2, with no traceback; any other
  exception a short "this is a bug, report it" paragraph, its traceback saved to a file.
- `resumable_build(command, out)` wraps an organism build: an interrupt (Ctrl-C) or an error
  mid-build ends with the one command that resumes it (the same command: stages are reused).

    from workbench.cli import common

    def main(argv: list[str] | None = None) -> int:
        return common.run(compare_seeds, parser().parse_args(argv))
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from workbench.core.errors import ArtifactError, ConfigError, WorkbenchError
from workbench.core.io import ensure_dir, write_error
from workbench.core.models import resolve_device
from workbench.core.progress import stage_log  # noqa: F401 - every command's stage logger (`[1m05s] section weights`)
from workbench.results.figures import write_result_figures

DEVICE_HELP = "cpu, cuda, cuda:N or auto"
_SEED_DIR = re.compile(r"seed(\d+)")


class FlagTarget(Protocol):
    """A parser or an argument group: anything flags can be added to."""

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action: ...


# --------------------------------------------------------------------------- the shared flags


def command_parser(prog: str, description: str, *, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser for `python -m <prog>`; add the flags the command takes."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)


def writable_out(directory: str | os.PathLike) -> Path:
    """`--out` made and proven writable BEFORE any work (an ArtifactError naming it when it is a
    file, read-only or on a full disk), not after minutes of analysis when the result is saved."""
    import tempfile

    directory = ensure_dir(directory)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise write_error(directory, e, "write to") from e
    return directory


def add_device_flag(parser: FlagTarget, default: str = "cpu") -> None:
    parser.add_argument("--device", default=default, help=f"{DEVICE_HELP} (default: {default})")


def add_quiet_flag(parser: FlagTarget, help: str = "no progress bars") -> None:
    parser.add_argument("--quiet", action="store_true", help=help)


def add_out_flag(parser: FlagTarget, default: str | None, help: str) -> None:
    """`--out DIR`; `help` names what goes there and, when `default` is None, what None means."""
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument("--out", default=default, metavar="DIR", help=help + shown)


def default_threads() -> int:
    """The `--threads` default: $OMP_NUM_THREADS when set (a shared machine's usual cap), else the
    cores this process may use (`os.sched_getaffinity`, which respects taskset and cgroups)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Measured with `python -m workbench.bench organism` ("contention" rows: the tiny organism's base
# training, 200 steps) on this project's 2-core machine (1-min load average beside each). Idle
# machine: 1 thread 3.5 s (0.3) and 6.0 s beside 2 busy processes (0.5), x1.7; 2 threads 3.9 s (0.7)
# and 24.1 s beside 2 busy processes (1.9), x6.1. Shared with other jobs: 1 thread 5.0 s (2.8) and
# 10.5 s loaded (2.9), x2.1; 2 threads 90.6 s (5.2) and 773 s loaded (12.6). The organism's models
# are too small to gain from a second thread even on an idle machine, and threads that outnumber the
# free cores collapse (OpenMP workers wait on descheduled ones), so its builds default to one.
ORGANISM_THREADS = 1


def organism_threads() -> int:
    """The thread count organism builds (and the test suite's fixtures) default to: $OMP_NUM_THREADS
    when set, else ORGANISM_THREADS (1, measured above: it does not collapse under contention)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else ORGANISM_THREADS


ORGANISM_THREADS_WHY = ("$OMP_NUM_THREADS when set, else 1: the organism's tiny models gain nothing from more, and "
                        "more collapse on a shared CPU")


def add_threads_flag(parser: FlagTarget, default: int | None = None, why: str | None = None) -> None:
    """`--threads N`: torch's CPU threads (intra-op), set by `run` while the body runs. `default`
    (with `why`, shown in the help) only where a command is measured faster on a fixed count."""
    shown = (f"{default}: {why}" if default is not None else
             f"{default_threads()}: $OMP_NUM_THREADS when set, else the cores this process may use")
    parser.add_argument("--threads", type=positive_int, default=default if default is not None else default_threads(),
                        metavar="N", help=f"torch CPU threads (default: {shown}; on a machine shared with other jobs, "
                        "1 or 2 keeps the threads from fighting over the cores; OMP_NUM_THREADS=N does the same for "
                        "every library)")


def add_workers_flag(parser: FlagTarget, what: str = "an organism build trains independent stages in",
                     same: str = "every count writes the same bytes") -> None:
    """`--workers N`: processes `what` (1: everything in this process)."""
    from workbench.organism.parallel import default_workers

    parser.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                        help=f"processes {what}, one torch thread each (default: {default_workers()} = min(2, the "
                        f"cores this process may use); 1 runs in this process; {same})")


@contextmanager
def using_threads(*args: Any) -> Iterator[None]:
    """torch.set_num_threads(--threads) of any parsed-arguments Namespace among `args` for the
    duration of the block, the previous count restored after it (so a command called in-process,
    from a test or a notebook, leaves the caller's thread count as it found it)."""
    threads = [a.threads for a in args if isinstance(a, argparse.Namespace) and getattr(a, "threads", None)]
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads[0])
    try:
        yield
    finally:
        torch.set_num_threads(before)


DEFAULT_ORGANISM = "artifacts/organism"


def default_organism_dir(preset: str = "default") -> str:
    """Where a preset's organism lives unless told otherwise: artifacts/organism for the default
    preset, artifacts/organism-<preset> for any other, so no preset builds over another's."""
    return DEFAULT_ORGANISM if preset == "default" else f"{DEFAULT_ORGANISM}-{preset}"


def add_organism_flag(parser: FlagTarget, default: str | None = None,
                      help: str = "organism directory holding seed{N}/ subdirectories") -> None:
    """`--organism DIR`; required when there is no default."""
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument("--organism", default=default, required=default is None, metavar="DIR", help=help + shown)


def add_seeds_flag(parser: FlagTarget, default: Sequence[int] | None, help: str) -> None:
    """`--seeds N [N ...]` (each also `0,1,2` or `0-4`) -> args.seeds, a list of ints; `help`
    says what the seeds are for and, when `default` is None, what None means."""
    shown = f" (default: {' '.join(map(str, default))})" if default is not None else ""
    parser.add_argument("--seeds", nargs="+", default=None if default is None else list(default), metavar="N",
                        type=_seeds_argument, action=_FlattenSeeds, help=help + shown)


def _whole_number(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {what}.") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is too small; give {what}.")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a row limit, a thread count); else a usage error (exit 2)
    naming the value, never a silent clamp."""
    return _whole_number(text, 1, "a whole number of at least 1")


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (a count where 0 means "none"); else a usage error (exit 2)."""
    return _whole_number(text, 0, "a whole number of at least 0")


def parse_seeds(text: str) -> list[int]:
    """'3' -> [3]; '0,1,2' -> [0, 1, 2]; '0-4' -> [0, 1, 2, 3, 4]; '0-2,5' -> [0, 1, 2, 5]."""
    seeds: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if part.startswith("-"):
                raise ConfigError(f"seed {part} is negative; seeds are whole numbers of at least 0, e.g. 0 1 2 or 0-4.")
            if "-" in part:
                lo, hi = part.split("-")
                seeds += list(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"seeds={text!r} is not a seed list. Use e.g. '0,1,2' or '0-4'.") from e
    return seeds


def _seeds_argument(text: str) -> list[int]:
    """`parse_seeds` as an argparse type: a bad list is a usage error (exit 2)."""
    try:
        seeds = parse_seeds(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} names no seed. Use e.g. 0 1 2, 0,1,2 or 0-4.")
    return seeds


class _FlattenSeeds(argparse.Action):
    """--seeds 0 1-2 -> [0, 1, 2]: each value is parsed to a list by `_seeds_argument`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [s for chunk in values for s in chunk])


# --------------------------------------------------------------------------- flags from config dataclasses


@dataclass(frozen=True)
class ConfigFlag:
    """One flag for one field of a config dataclass: its default and type come from the field.

    flag: the option name (default: --field-name). type: the element type when the default is
    None (else the default's type). default_text: what "(default: ...)" says, when the plain
    value would mislead (e.g. None meaning "the models' own hooks").
    """

    field: str
    help: str
    flag: str | None = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    nargs: str | None = None
    default_text: str | None = None

    @property
    def option(self) -> str:
        return self.flag or "--" + self.field.replace("_", "-")


@dataclass(frozen=True)
class ConfigFlags:
    """Flags for some fields of one config dataclass, the field defaults used as flag defaults."""

    config: type
    flags: tuple[ConfigFlag, ...]

    def defaults(self) -> dict[str, Any]:
        """The dataclass's defaults of the flagged fields (default factories called)."""
        out = {}
        fields = {f.name: f for f in dataclasses.fields(self.config)}
        for flag in self.flags:
            if flag.field not in fields:
                raise ConfigError(f"{self.config.__name__} has no field {flag.field!r} for flag {flag.option}.")
            f = fields[flag.field]
            if f.default is not dataclasses.MISSING:
                out[flag.field] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[flag.field] = f.default_factory()
            else:
                raise ConfigError(f"{self.config.__name__}.{flag.field} has no default; flag {flag.option} needs one.")
        return out

    def add_to(self, parser: FlagTarget) -> None:
        for flag in self.flags:
            default = self.defaults()[flag.field]
            kwargs: dict[str, Any] = {"dest": flag.field, "default": default}
            if isinstance(default, bool):  # --flag / --no-flag where the default is True
                kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
            else:
                if flag.choices is None:
                    kwargs["metavar"] = flag.option.lstrip("-").replace("-", "_").upper()
                element = default[0] if isinstance(default, (tuple, list)) and default else default
                kwargs["type"] = flag.type or (type(element) if element is not None else str)
                if isinstance(default, (tuple, list)) or flag.nargs:
                    kwargs["nargs"] = flag.nargs or "+"
                if flag.choices is not None:
                    kwargs["choices"] = list(flag.choices)
            shown = flag.default_text if flag.default_text is not None else _shown(default)
            parser.add_argument(flag.option, help=f"{flag.help} (default: {shown})", **kwargs)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The flagged fields' values from parsed args (lists back to tuples where the field is one)."""
        defaults = self.defaults()
        out = {}
        for flag in self.flags:
            value = getattr(args, flag.field)
            out[flag.field] = tuple(value) if isinstance(defaults[flag.field], tuple) and value is not None else value
        return out


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


# --------------------------------------------------------------------------- device, seeds, results


def device_of(args: argparse.Namespace) -> torch.device:
    """The torch device `--device` names ("auto": CUDA when present, else CPU); a ConfigError
    naming the value when it is unusable here."""
    return resolve_device(args.device)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress unless --quiet: a bar on a terminal, a widget in a notebook, and elsewhere (a CI
    log, a file) a line per long stage with its elapsed time and an estimate of what remains
    (`workbench.core.progress.progress_bar` chooses)."""
    return not args.quiet


def organism_seeds(organism: str | Path, seeds: Sequence[int] | None = None) -> list[tuple[int, Path]]:
    """(seed, seed directory) for each seed a command loops over: `seeds`, or every built seed
    (seed{N}/manifest.json) in order when None. All are checked before any work starts."""
    root = Path(organism)
    built = {int(m.group(1)): p.parent for p in root.glob("seed*/manifest.json")
             if (m := _SEED_DIR.fullmatch(p.parent.name))}
    if seeds is None:
        if not built:
            raise ArtifactError(f"No organism seeds in {root} (no seed{{N}}/manifest.json). Fix the path, or build one "
                                f"with python -m workbench.organism --out {root}.")
        return sorted(built.items())
    missing = [s for s in seeds if s not in built]
    if missing:
        have = f"built seeds: {' '.join(map(str, sorted(built)))}" if built else "no seed is built there"
        raise ArtifactError(f"No organism seed {' '.join(map(str, missing))} in {root} (seed{{N}}/manifest.json missing; "
                            f"{have}). Fix --organism or --seeds, or build it with python -m workbench.organism "
                            f"--out {root} --seeds {' '.join(map(str, missing))}.")
    return [(s, root / f"seed{s}") for s in seeds]


def save_with_figures(result: Any, directory: str | Path) -> Path:
    """Save a result (its `save`) and write its `figures()` as HTML beside it (`<kind>_<name>.html`)."""
    path = result.save(directory)
    write_result_figures(result, directory)
    return path


def run(body: Callable[..., int | None], *args: Any, **kwargs: Any) -> int:
    """Call `body(*args, **kwargs)` and return its exit code (None: 0), the one error path of every
    `python -m workbench.*` command:

    - a WorkbenchError becomes `error: <message>` on stderr and exit code 2, with no traceback;
    - an OSError (read-only or full disk, a file where a folder should be) becomes an `error:`
      line naming the path and the fix, exit code 2;
    - any other exception is a bug: one short paragraph saying where to report it, the traceback
      saved to a file (`artifacts/logs/<command>-<time>.txt`, or the temp folder), exit code 1.

    `--threads` of a parsed-arguments Namespace among `args` holds while the body runs (`using_threads`).
    """
    try:
        with using_threads(*args):
            code = body(*args, **kwargs)
    except BuildInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {write_error(e.filename or '(unnamed path)', e, 'use')}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence: no wall of frames
        entry = entry_name(body)
        saved = save_traceback(entry)
        where = f"The traceback is saved in {saved}." if saved else "The traceback could not be saved."
        print(f"error: unexpected {type(e).__name__} in {entry}: {str(e)[:300]}\nThis is a bug in the workbench, not "
              f"in your input. {where} Please report it (the command line, that file and `pip show workbench`) on the "
              f"workbench issue tracker ({REPORT_TO}).", file=sys.stderr)
        return 1
    return 0 if code is None else int(code)


def entry_name(body: Callable[..., Any]) -> str:
    """The command a body belongs to ("compare" for workbench.cli.compare, "organism" for
    workbench.organism.__main__ run with -m)."""
    module = getattr(body, "__module__", None) or "workbench"
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else "workbench"
    parts = [p for p in module.split(".") if p not in ("__main__", "cli")]
    return parts[-1] if parts else "workbench"


# --------------------------------------------------------------------------- interrupted builds


class BuildInterrupted(WorkbenchError):
    """An organism build stopped by the user (Ctrl-C); the message names the command resuming it.
    `run` prints it as `interrupted: ...` and exits 130 (the shell's code for Ctrl-C)."""


def resume_hint(command: str, out: str | os.PathLike) -> str:
    """The sentence every stopped build ends with: what is kept and the one command that resumes."""
    return (f"What was built in {out} is kept; rerun the same command to resume the build where it stopped:\n"
            f"  {command}")


@contextmanager
def resumable_build(command: str, out: str | os.PathLike) -> Iterator[None]:
    """Around an organism build: Ctrl-C becomes BuildInterrupted and an error mid-build gains the
    resume command (a WorkbenchError keeps its class; any other exception, a bug, prints the hint
    to stderr and goes on to `run`'s bug report), so no stopped build leaves the user guessing."""
    try:
        yield
    except KeyboardInterrupt:
        raise BuildInterrupted(f"the organism build was interrupted. {resume_hint(command, out)}") from None
    except BuildInterrupted:
        raise
    except WorkbenchError as e:
        e.args = (f"{e}\nThe organism build stopped. Once that is fixed: {resume_hint(command, out)}",)
        raise
    except Exception:
        print(f"The organism build stopped. {resume_hint(command, out)}", file=sys.stderr)
        raise


REPORT_TO = "the `issues` tracker of the workbench repository"
LOG_DIR = Path("artifacts/logs")


def save_traceback(entry: str, log_dir: Path | None = None) -> Path | None:
    """Write the current exception's traceback to `<log_dir>/<entry>-<time>.txt` (artifacts/logs,
    or the temp folder when that is not writable); None when neither is."""
    import tempfile
    import time
    import traceback

    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = f"python -m workbench.{entry} {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}"
    for folder in (log_dir or LOG_DIR, Path(tempfile.gettempdir()) / "workbench-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{entry}-{stamp}-{os.getpid()}.txt"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def per_seed_results(args: argparse.Namespace, seeds: Sequence[tuple[int, Path]], out: Path, settings: dict[str, Any],
                     result_type: type, run_seed: Callable[[Path], Any]) -> Iterator[tuple[int, Any, bool]]:
    """(seed, result, read_back) for every seed: the result saved in OUT/seed{N}/ when it was made
    with the same `settings`, the same seed manifest (a rebuilt organism at the same path is not
    read back) and the same device; else `run_seed(seed_dir)`, saved with its figures (a killed
    run resumes at the first seed not saved)."""
    from workbench.core.io import sha256_file

    for seed, seed_dir in seeds:
        wanted = {**settings, "manifest_sha256": sha256_file(Path(seed_dir) / "manifest.json"),
                  "device": str(device_of(args))}
        directory = out / f"seed{seed}"
        saved = None
        if (directory / f"{result_type.kind}.json").exists():
            try:
                saved = result_type.load(directory)
            except ArtifactError:
                saved = None  # unreadable: run again and overwrite
        if saved is not None and saved.meta.get("settings") == wanted:
            yield seed, saved, True
            continue
        result = run_seed(Path(seed_dir))
        result.meta["settings"] = wanted
        save_with_figures(result, directory)
        yield seed, result, False
