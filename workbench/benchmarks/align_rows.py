"""Benchmark `align_rows`: streamed per-row alignment scores (`stream_alignment_scores`, what
`python -m workbench.align_rows` runs): memory flat in the number of rows, and 1 vs 2 processes.

A native model (the capture benchmark's shapes: 4 layers, d_model 256, 64 positions; quick: tiny)
scores its rows along the teacher delta, `BATCH` rows per forward-mode pass and per shard. Cases:
- `rss x1`, `rss x10`: peak resident memory of scoring N and 10N rows at the same batch size,
  each in a FRESH subprocess measured as `workbench.benchmarks.memory` measures (glibc's mmap
  threshold at 128 KiB, the heap trimmed and the baseline taken after the model and the rows are
  loaded, RSS sampled every millisecond). `peak_rss_mb` is the process peak; `extra_mb` the peak
  above the baseline; `rss x10` has `rss_ratio_vs_x1` (process peaks; the goal: <= 1.10) and
  `extra_ratio_vs_x1`.
- `ranks/1`, `ranks/1 all threads`, `ranks/2`: the capture benchmark's three cases
  (`workbench.benchmarks.capture.ranks_cases`) for these scores: one launch of
  `workbench.benchmarks._align_ranks` under `torchrun --nproc-per-node 2` (gloo), interleaved
  rounds, start-up not counted; `throughput_ratio_vs_1` = time of one process / time of two, and
  `identical` says whether the three stores were byte-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from workbench.benchmarks.harness import Case, PeakRSS

BATCH = 32
N_FULL, N_QUICK = 256, 16


def setup(quick: bool, n: int, device: torch.device) -> tuple[Any, Any, dict[str, Any], Any]:
    """(AlignmentModel, Inputs of n rows, {"delta_T": direction}, Objective) on the capture benchmark's model."""
    from workbench.benchmarks.capture import FULL, QUICK, _inputs, _lineage
    from workbench.engines.alignment_model import AlignmentModel
    from workbench.engines.objective import Objective

    shape = QUICK if quick else FULL
    lin = _lineage(shape, device)
    return AlignmentModel(lin, "base"), _inputs(n, shape), {"delta_T": lin.delta_view("teacher", "base")}, Objective("hard")


def measure(n: int, quick: bool) -> dict[str, Any]:
    """In THIS process: the peak RSS while `n` rows are scored (baseline after loading)."""
    import gc

    import psutil

    from workbench.analyses.alignment_rows import RowScoresConfig, stream_alignment_scores
    from workbench.benchmarks.memory import _trim_heap

    torch.set_num_threads(1)
    model, rows, dirs, objective = setup(quick, n, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        _trim_heap()
        baseline = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        with PeakRSS(interval=0.001) as rss:
            stream_alignment_scores(model, rows, dirs, objective, Path(tmp) / "s", RowScoresConfig(batch_size=BATCH))
        seconds = time.perf_counter() - t0
    return {"rows": n, "peak_bytes": rss.peak, "baseline_bytes": baseline, "seconds": seconds}


def _child(argv: list[str]) -> None:
    print("ALIGN_ROWS_RESULT " + json.dumps(measure(int(argv[0]), argv[1] == "quick")))


def run_measure(n: int, quick: bool) -> dict[str, Any]:
    """`measure` in a fresh Python process, with the memory benchmark's allocator setting."""
    from workbench.benchmarks.memory import MMAP_THRESHOLD

    code = "import sys; from workbench.benchmarks.align_rows import _child; _child(sys.argv[1:])"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    out = subprocess.run([sys.executable, "-c", code, str(n), "quick" if quick else "full"], env=env,
                         capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("ALIGN_ROWS_RESULT "):
            return json.loads(line[len("ALIGN_ROWS_RESULT "):])
    raise RuntimeError(f"align_rows memory measure of {n} rows failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Peak memory at N and 10N rows, then 1 vs 2 processes (CPU; `device` is not used: gloo)."""
    from workbench.benchmarks.capture import ranks_cases

    n = N_QUICK if quick else N_FULL
    cases = []
    for label, rows in (("rss x1", n), ("rss x10", 10 * n)):
        r = run_measure(rows, quick)
        extra = (r["peak_bytes"] - r["baseline_bytes"]) / 2**20
        cases.append(Case(label, 1, r["seconds"], 0.0, r["peak_bytes"] / 2**20, baseline="rss x1" if "x10" in label else None,
                          extra={"rows": rows, "batch_size": BATCH, "extra_mb": extra,
                                 "measured_on": "process RSS, fresh subprocess, MALLOC_MMAP_THRESHOLD_=131072"}))
    x1, x10 = cases
    x10.extra["rss_ratio_vs_x1"] = x10.peak_rss_mb / x1.peak_rss_mb
    x10.extra["extra_ratio_vs_x1"] = x10.extra["extra_mb"] / max(x1.extra["extra_mb"], 1e-9)
    with tempfile.TemporaryDirectory(prefix="bench-align-rows-") as tmp:
        return cases + ranks_cases(Path(tmp), quick, 1 if quick else 3, driver="workbench.benchmarks._align_ranks")
