"""Benchmark `organism`: per-stage time of a fresh one-seed default build (native, and the Qwen2
family with its LoRA students), the tiny preset's total,
the tiny build serial against --workers 2, and the organism build under contention (base training with 1 and 2 torch threads, quiet and beside
competing busy processes; each figure with the machine's load average)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import torch

from workbench.benchmarks.harness import Case, PeakRSS, competing_load

CONTENTION_THREADS = (1, 2)  # torch intra-op threads compared
BUSY_PROCESSES = 2  # competing processes of the loaded runs (as many as this machine has cores)


def run(device: torch.device, quick: bool = False) -> list[Case]:
    """Per-stage time of a fresh one-seed build of the default preset, the tiny preset's total,
    and `contention` (CPU only)."""
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
    if not quick:
        cases += qwen2_rows(device)
        cases += workers_rows(device)
    if device.type == "cpu":
        cases += contention(steps=100 if quick else 300)
    return cases


def qwen2_rows(device: torch.device) -> list[Case]:
    """"qwen2-default/<stage>": a fresh one-seed build of the default preset in the Qwen2 family
    (LoRA students) as the command builds it (`--workers` default), per stage (each stage's own
    time, in whichever process built it) beside the seed's wall time; the load average read after it.
    Peak memory: this process and its workers together."""
    from workbench.organism.hf_family.build import build_hf_organism
    from workbench.organism.hf_family.config import hf_preset
    from workbench.organism.parallel import default_workers

    workers = default_workers() if device.type == "cpu" else 1
    with tempfile.TemporaryDirectory() as tmp, PeakRSS(children=True) as rss:  # the workers' memory too
        (build,), _ = build_hf_organism(hf_preset("default"), [0], tmp, device=device, progress=False, workers=workers)
    extra = {"loadavg": [round(x, 2) for x in os.getloadavg()], "trait_rates": build.manifest.get("trait_rates"),
             "workers": workers}
    cases = [Case("qwen2-default/total", 1, build.timings["total"], 0.0, rss.peak_mb, extra=extra)]
    cases += [Case(f"qwen2-default/{stage}", 1, seconds, 0.0, rss.peak_mb, baseline="qwen2-default/total")
              for stage, seconds in build.timings.items() if stage != "total"]
    return cases


def workers_rows(device: torch.device, workers: tuple[int, ...] = (1, 2)) -> list[Case]:
    """"tiny/workers{N}/total": a fresh tiny build (build_organism) in N processes (1: the serial
    build, the baseline), with the load average read after each; the same bytes at every N."""
    from workbench.organism.build import build_organism
    from workbench.organism.config import preset

    cases = []
    for n in workers:
        with tempfile.TemporaryDirectory() as tmp, PeakRSS(children=n > 1) as rss:
            t0 = time.perf_counter()
            build_organism(preset("tiny"), [0], tmp, device=device, progress=False, workers=n)
            seconds = time.perf_counter() - t0
        cases.append(Case(f"tiny/workers{n}/total", 1, seconds, 0.0, rss.peak_mb,
                          baseline=f"tiny/workers{workers[0]}/total" if n != workers[0] else None,
                          extra={"loadavg": [round(x, 2) for x in os.getloadavg()], "workers": n}))
    return cases


def contention(steps: int = 300, threads: tuple[int, ...] = CONTENTION_THREADS, busy: int = BUSY_PROCESSES,
               runs: int = 1, report: Callable[[str], None] = lambda line: None) -> list[Case]:
    """"organism build under contention": the tiny organism's base training (its longest stage, cut
    to `steps` steps) with each thread count, quiet and beside `busy` busy-looping processes.
    `contention/threads{N}/loaded` has `contention/threads{N}/quiet` as its baseline, so its ratio
    is the slowdown under load; `extra` holds os.getloadavg() (1, 5, 15 min) read after each
    measurement, since on a shared machine "quiet" is only as quiet as the others let it be.
    Rounds alternate quiet and loaded so drift in the others' load hits both alike."""
    times: dict[str, list[float]] = {}
    loads: dict[str, list[tuple[float, float, float]]] = {}
    before = torch.get_num_threads()
    try:
        with PeakRSS() as rss:
            for _ in range(runs):
                for n in threads:
                    for state in ("quiet", "loaded"):
                        label = f"contention/threads{n}/{state}"
                        torch.set_num_threads(n)
                        if state == "loaded":
                            with competing_load(busy):
                                seconds = time_base_training(steps)
                        else:
                            seconds = time_base_training(steps)
                        times.setdefault(label, []).append(seconds)
                        loads.setdefault(label, []).append(os.getloadavg())
                        report(f"{label}: {seconds:.2f}s, loadavg {loads[label][-1]}")
    finally:
        torch.set_num_threads(before)
    cases = []
    for label, ts in times.items():
        n, state = label.split("/")[1], label.split("/")[2]
        ts_sorted = sorted(ts)
        cases.append(Case(label, len(ts), ts_sorted[len(ts) // 2], ts_sorted[-1] - ts_sorted[0], rss.peak_mb,
                          baseline=f"contention/{n}/quiet" if state == "loaded" else None,
                          extra={"loadavg": [[round(x, 2) for x in la] for la in loads[label]], "steps": steps,
                                 "busy_processes": busy if state == "loaded" else 0}))
    return cases
    return cases


def time_base_training(steps: int) -> float:
    """Seconds of `steps` steps of the tiny preset's base pretraining on a fresh model (CPU)."""
    from workbench.core.models import boot_native
    from workbench.organism.config import preset
    from workbench.organism.tokenizer import Tokenizer
    from workbench.organism.training import pretrain_base

    cfg = preset("tiny", base_steps=steps, base_warmup=min(50, steps))
    tok = Tokenizer.default()
    model = boot_native(cfg.model.native_config(len(tok), 0), device=torch.device("cpu"))
    t0 = time.perf_counter()
    pretrain_base(model, tok, cfg, 0, progress=False)
    return time.perf_counter() - t0
