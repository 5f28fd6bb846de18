"""Shared fixtures. The tiny organism is built once per test session and reused across
sessions (every stage is cached by its config hash and package versions), and notebooks
find it through WORKBENCH_ORGANISM_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_DIR = REPO / "artifacts" / "cache" / "tiny-organism"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_organism():
    """(SeedBuild, directory) of the tiny preset, seed 0."""
    from workbench.organism.build import build_organism
    from workbench.organism.config import preset

    builds, _ = build_organism(preset("tiny"), [0], TINY_DIR, progress=False)
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
