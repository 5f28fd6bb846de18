"""Benchmark `capture`: capturing resid_post at every layer against a plain forward of the same models.

A native model big enough that the forward pass dominates (4 layers, d_model 256, 64 positions),
two models of one lineage. Cases, all in one run:
- `forward`: the plain forward of both models over the inputs (batched, inference mode): baseline.
- `capture/last`, `capture/mean`, `capture/all`: end-to-end `capture` into a fresh directory
  (hooks, position rule, disk writes, checksums, manifest). Goal: <= 1.2x forward for last/mean.
  Cases run in interleaved rounds so that load drift on a shared machine hits them alike.
- `rss/all x1`, `rss/all x10`: peak RSS of a positions="all" capture of N and 10N inputs (one
  process). The capture streams shard by shard, so the goal is within 10% of each other.
- `ranks/1`, `ranks/1 all threads`, `ranks/2`: the same capture (positions="last") by one
  process with a rank's threads, by one process with the threads of both ranks (what a plain
  launch gets), and by two `gloo` processes under `torchrun` (one launch of
  `workbench.benchmarks._capture_ranks`, interleaved rounds, start-up not counted). `ranks/2`'s
  ratio is its time over `ranks/1` (0.5 = perfect scaling), `throughput_ratio_vs_1*` the
  inverse against each one-process case, and `identical` says whether all three artifacts were
  byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from workbench.benchmarks.harness import Case, PeakRSS, time_case, time_interleaved
from workbench.core.errors import WorkbenchError

FULL = dict(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=1000, n_ctx=64)
QUICK = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=20, n_ctx=8)


def _lineage(shape: dict, device: torch.device):
    from workbench.core.lineage import Lineage
    from workbench.core.models import boot_native

    cfg = {**shape, "act_fn": "gelu", "normalization_type": "LN"}
    return Lineage.from_models({
        "base": boot_native({**cfg, "seed": 0}, device=device),
        "teacher": boot_native({**cfg, "seed": 1}, device=device),
    })


def _inputs(n: int, shape: dict):
    from workbench.core.inputs import Inputs

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, shape["d_vocab"], (n, shape["n_ctx"]), generator=g)
    half = shape["n_ctx"] // 2
    return Inputs.from_sequences(tokens[:, :half].tolist(), tokens[:, half:].tolist(), "bench")


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Capture vs plain forward (positions last, mean, all) and peak RSS for 10x more inputs."""
    from workbench.capture.capture import capture

    shape = QUICK if quick else FULL
    n, batch, runs, warmup = (8, 8, 1, 0) if quick else (256, 64, 5, 1)
    lin = _lineage(shape, device)
    inputs = _inputs(n, shape)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(shape["n_layers"])]
    tmp = Path(tempfile.mkdtemp(prefix="bench-capture-"))

    def forward() -> None:
        with torch.inference_mode():
            for name in lin.names:
                for b in inputs.batches(batch):
                    lin[name](b.tokens.to(device))

    def capture_fn(positions: str, rows=inputs):
        def go() -> None:
            out = tmp / positions
            capture(lin, rows, hooks, positions=positions, out_dir=out, batch_size=batch, device=device, progress=False)
            shutil.rmtree(out)
        return go

    try:
        fns = {"forward": forward, **{f"capture/{p}": capture_fn(p) for p in ("last", "mean", "all")}}
        cases = time_interleaved(fns, baseline="forward", runs=runs, warmup=warmup, device=device)
        for case in cases:
            case.extra = {"rows": n, "models": len(lin), "hooks": len(hooks), **(case.extra or {})}
        n_rss = max(n // 4, batch)  # positions="all" writes n_ctx x d_model floats per row and hook
        for label, rows in (("rss/all x1", _inputs(n_rss, shape)), ("rss/all x10", _inputs(10 * n_rss, shape))):
            go = capture_fn("all", rows)
            with PeakRSS() as rss:
                t = time_case(label, go, runs=1, warmup=0, device=device)
            cases.append(Case(label, 1, t.median_s, 0.0, rss.peak_mb, baseline="rss/all x1" if "x10" in label else None,
                              extra={"rows": len(rows)}))
        x1, x10 = cases[-2], cases[-1]
        x10.extra["rss_ratio_vs_x1"] = x10.peak_rss_mb / x1.peak_rss_mb
        return cases + ranks_cases(tmp, quick, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ranks_cases(tmp: Path, quick: bool, runs: int, driver: str = "workbench.benchmarks._capture_ranks") -> list[Case]:
    """`ranks/1` and `ranks/2`: one torchrun launch of two CPU processes (see the module doc) of
    `driver` (the capture's; `workbench.benchmarks._align_ranks` for the alignment scores')."""
    out = tmp / "ranks.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // 2))  # two processes share the cores
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([repo, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", driver, str(out), "quick" if quick else "full", str(runs)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not out.is_file():
        raise WorkbenchError(f"The 2-process benchmark {driver} failed (exit {done.returncode}): {done.stderr[-1500:]}")
    got = json.loads(out.read_text())
    cases = []
    labels = {"1": "ranks/1", "1t": "ranks/1 all threads", "2": "ranks/2"}
    for k, label in labels.items():
        ts = got["times"][k]
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        cases.append(Case(label, len(ts), statistics.median(ts), q[2] - q[0], got["peak_rss_mb"],
                          baseline=None if k == "1" else "ranks/1",
                          extra={"rows": got["rows"], "processes": 2 if k == "2" else 1, "jobs": got["jobs"],
                                 "identical": got["identical"],
                                 "threads": got["threads_per_process"] * (2 if k == "1t" else 1)}))
    one, all_threads, two = cases
    two.extra["throughput_ratio_vs_1"] = one.median_s / two.median_s
    two.extra["throughput_ratio_vs_1_all_threads"] = all_threads.median_s / two.median_s
    return cases
