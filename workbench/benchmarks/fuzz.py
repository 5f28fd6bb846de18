"""Benchmark `fuzz`: every reader fed random and mutated-valid documents (`_fuzz_readers`).

`python -m workbench.bench fuzz` runs 500 examples per reader (`--quick`: 100) and prints, per
reader: examples, loaded, rejected (a WorkbenchError or a usage error) and foreign (any other
exception: a bug; the first ones are printed). Each reader is one case; its time is the whole run's.
"""

from __future__ import annotations

import tempfile
import time

import torch

from workbench.benchmarks.harness import Case, PeakRSS

EXAMPLES = 500
QUICK_EXAMPLES = 100


def run(device: torch.device, quick: bool = False) -> list[Case]:
    from workbench.benchmarks._fuzz_readers import READERS, fuzz_reader

    n = QUICK_EXAMPLES if quick else EXAMPLES
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in READERS:
            t0 = time.perf_counter()
            with PeakRSS() as rss:
                counts = fuzz_reader(name, n, tmp)
            seconds = time.perf_counter() - t0
            print(f"  fuzz {name:<20} examples {counts.examples:4d}  loaded {counts.loaded:4d}  rejected "
                  f"{counts.rejected:4d}  foreign {counts.foreign:3d}  ({seconds:.1f}s)", flush=True)
            for failure in counts.failures:
                print(f"    foreign: {failure}", flush=True)
            cases.append(Case(f"fuzz/{name}", counts.examples, seconds, 0.0, rss.peak_mb,
                              extra={"examples": counts.examples, "loaded": counts.loaded, "rejected": counts.rejected,
                                     "foreign": counts.foreign, "failures": counts.failures}))
    return cases
