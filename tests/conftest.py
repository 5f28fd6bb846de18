"""Shared fixtures. The tiny organism is built once per test session and reused across
sessions (every stage is cached by its config hash and package versions), and notebooks
find it through WORKBENCH_ORGANISM_DIR. Tests run on the organism build's thread count
(`common.organism_threads()`: $OMP_NUM_THREADS, else 1, measured not to collapse on a shared CPU),
and a build that has work to do says so on the terminal, through pytest's capture."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from workbench.cli.common import organism_threads

REPO = Path(__file__).resolve().parents[1]
TINY_DIR = REPO / "artifacts" / "cache" / "tiny-organism"

torch.set_num_threads(organism_threads())


def built_already(cfg, seed_dir: Path) -> bool:
    """Whether `seed_dir` holds a build of `cfg` under these package versions (so it is reused)."""
    import json

    from workbench.core.provenance import package_versions

    try:
        manifest = json.loads((seed_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("config") == cfg.to_dict() and manifest.get("versions") == package_versions()


def terminal_log(config: pytest.Config, heading: str | None):
    """A `log` for an organism build that writes to the terminal even while pytest captures output
    (`pytest -q` would otherwise show nothing for the minutes a first build takes): `heading` when
    the build starts (None: the build is expected to be reused), then each stage that did work."""
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    start = time.monotonic()

    def write(line: str) -> None:
        if capman is not None and reporter is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line(line)

    def log(message: str) -> None:
        if message.startswith("seed "):
            if heading is not None:
                write(heading)
        elif not (message.endswith(": reused") or ": reused (" in message):
            write(f"  [{time.monotonic() - start:.0f}s]{message}")

    return log


@pytest.fixture(scope="session")
def tiny_organism(request):
    """(SeedBuild, directory) of the tiny preset, seed 0."""
    from workbench.organism.build import build_organism
    from workbench.organism.config import preset

    cfg = preset("tiny")
    heading = None if built_already(cfg, TINY_DIR / "seed0") else (
        f"\nbuilding the tiny test organism in {TINY_DIR} on {torch.get_num_threads()} thread(s): a few minutes, "
        "once (later sessions reuse it)")
    builds, _ = build_organism(cfg, [0], TINY_DIR, progress=False, log=terminal_log(request.config, heading))
    os.environ["WORKBENCH_ORGANISM_DIR"] = str(TINY_DIR)
    return builds[0]


@pytest.fixture(scope="session")
def distill_rows(tiny_organism):
    """4 teacher-written then 3 base-written rows of the tiny organism (the gradient tests' rows)."""
    from workbench.core.inputs import Inputs

    data = tiny_organism.directory / "data"
    x = Inputs.from_jsonl([data / "teacher.jsonl", data / "base.jsonl"])
    teacher = [i for i, s in enumerate(x.sources) if s == "teacher"][:4]
    base = [i for i, s in enumerate(x.sources) if s == "base"][:3]
    return x.select(teacher + base)
