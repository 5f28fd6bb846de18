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
