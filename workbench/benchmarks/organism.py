"""Benchmark `organism`: per-stage time of a fresh one-seed default build, and the tiny preset's total."""

from __future__ import annotations

import tempfile

import torch

from workbench.benchmarks.harness import Case, PeakRSS


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Per-stage time of a fresh one-seed build of the default preset, and the tiny preset's total."""
    from workbench.organism.build import build_seed
    from workbench.organism.config import preset

    cases = []
    for name in (["tiny"] if quick else ["tiny", "default"]):
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            build = build_seed(preset(name), 0, tmp, device=device, progress=False)
        total = build.timings["total"]
        cases.append(Case(f"{name}/total", 1, total, 0.0, rss.peak_mb))
        for stage, seconds in build.timings.items():
            if stage != "total":
                cases.append(Case(f"{name}/{stage}", 1, seconds, 0.0, rss.peak_mb, baseline=f"{name}/total"))
    return cases
