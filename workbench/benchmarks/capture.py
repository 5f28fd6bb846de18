"""Benchmark `capture`: capturing resid_post at every layer against a plain forward of the same models.

A native model big enough that the forward pass dominates (4 layers, d_model 256, 64 positions),
two models of one lineage. Cases, all in one run:
- `forward`: the plain forward of both models over the inputs (batched, inference mode): baseline.
- `capture/last`, `capture/mean`, `capture/all`: end-to-end `capture` into a fresh directory
  (hooks, position rule, disk writes, checksums, manifest). Goal: <= 1.2x forward for last/mean.
  Cases run in interleaved rounds so that load drift on a shared machine hits them alike.
- `rss/all x1`, `rss/all x10`: peak RSS of a positions="all" capture of N and 10N inputs. The
  capture streams shard by shard, so the goal is within 10% of each other.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from workbench.benchmarks.harness import Case, PeakRSS, time_case, time_interleaved

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
        return cases
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
