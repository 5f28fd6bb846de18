"""`python -m workbench.bench NAME...`: run named benchmarks, write `artifacts/bench/NAME.json`.
`python -m workbench.bench --suite gpu --device cuda`: the prepared GPU check (`benchmarks/gpu.py`).

Schema (DESIGN.md section 4):
    {schema_version, name, device, versions, cases: [{label, runs, median_s, iqr_s, peak_rss_mb, baseline, ratio}]}
`ratio` is median_s / (median_s of the case named by `baseline`) in the same run: speed is
reported as ratios against a baseline measured alongside, never as absolute wall-clock claims.
Peak RSS is sampled in a background thread while a case runs (process-wide, in MB).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from workbench.cli import common
from workbench.core.errors import ConfigError, WorkbenchError, unknown_name
from workbench.core.io import atomic_write_json, read_json
from workbench.core.provenance import package_versions
from workbench.core.schemas import BenchFile, check_version, require_dict, validate

DEFAULT_OUT = Path("artifacts/bench")
SUITES = {"gpu": (("gpu",), "Qwen2.5-0.5B/1.5B-shaped random models in bf16 on --device cuda: capture vs the plain "
                  "Hugging Face forward, alignment rows/s, trait evaluation, peak GPU memory (a few minutes; --quick: "
                  "tiny float32 shapes on the CPU)")}
"""Prepared sets of benchmarks (`--suite NAME`): NAME -> (benchmark names, what it is for)."""
BENCH_SCHEMA_VERSION = 1


@dataclass
class Case:
    """One timed case of a benchmark."""

    label: str
    runs: int
    median_s: float
    iqr_s: float
    peak_rss_mb: float
    baseline: str | None = None
    ratio: float | None = None
    extra: dict[str, Any] | None = None  # case-specific figures (e.g. agreement with the baseline)


class PeakRSS:
    """Samples this process's resident memory while active; `.peak_mb` is the maximum seen. With
    `children`, each sample is this process's plus its live child processes' (a pooled build's
    workers hold their own models), read every 50 ms at most (listing children costs more)."""

    def __init__(self, interval: float = 0.005, children: bool = False):
        self.interval, self.peak, self.children = (max(interval, 0.05) if children else interval), 0, children
        self._proc, self._stop = psutil.Process(), threading.Event()

    def _rss(self) -> int:
        total = self._proc.memory_info().rss
        if self.children:
            for child in self._proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # ended between the listing and the read
                    pass
        return total

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@contextmanager
def scratch(device: torch.device, prefix: str) -> Iterator[Path]:
    """A temporary folder for a benchmark's models, with one intra-op thread on a CPU (ratios are
    stable on a shared CPU); the thread count is restored and the folder removed afterwards."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def competing_load(processes: int) -> Iterator[None]:
    """`processes` busy-looping Python children (a competing CPU load, as other jobs on a shared
    machine make) for the duration of the block; each is ended by its own pid afterwards (and ends
    itself should this process die first: it loops only while its parent lives)."""
    import subprocess

    loop = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(100_000): pass"
    children = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(processes)]
    try:
        time.sleep(0.5)  # let them reach the cores before the timed work starts
        yield
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(label: str, fn: Callable[[], Any], *, runs: int = 5, warmup: int = 1,
              device: torch.device | str = "cpu", baseline: str | None = None) -> Case:
    """Median and IQR of `runs` timed calls of `fn` after `warmup` untimed ones."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    with PeakRSS() as rss:
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Case(label, runs, statistics.median(times), q[2] - q[0], rss.peak_mb, baseline)


def time_interleaved(fns: dict[str, Callable[[], Any]], *, baseline: str, runs: int = 5, warmup: int = 1,
                     device: torch.device | str = "cpu") -> list[Case]:
    """Time `fns` in interleaved rounds (each round calls every fn once, in order), so load drift
    on a shared machine hits every case alike. Each case gets its median over rounds, its ratio
    against `baseline` (set by `fill_ratios`) and, in `extra`, the median of the per-round ratios
    (`paired_ratio_median`: robust to a slow round). Peak RSS is the whole run's."""
    if baseline not in fns:
        raise WorkbenchError(f"Baseline {baseline!r} is not one of the cases {sorted(fns)}.")
    device = torch.device(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with PeakRSS() as rss:
        for round_ in range(warmup + runs):
            for label, fn in fns.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                if round_ >= warmup:
                    times[label].append(time.perf_counter() - t0)
    cases = []
    for label, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        paired = statistics.median(t / b for t, b in zip(ts, times[baseline]))
        cases.append(Case(label, len(ts), statistics.median(ts), q[2] - q[0], rss.peak_mb,
                          baseline=None if label == baseline else baseline,
                          extra=None if label == baseline else {"paired_ratio_median": paired}))
    return cases


def fill_ratios(cases: list[Case]) -> list[Case]:
    """Set each case's ratio against the case its `baseline` names."""
    by_label = {c.label: c for c in cases}
    for c in cases:
        if c.baseline is not None:
            if c.baseline not in by_label:
                raise WorkbenchError(f"Benchmark case {c.label!r} names unknown baseline {c.baseline!r}.")
            c.ratio = c.median_s / by_label[c.baseline].median_s
    return cases


def write_result(name: str, device: torch.device, cases: list[Case], out_dir: Path = DEFAULT_OUT) -> Path:
    path = Path(out_dir) / f"{name}.json"
    rows = [{k: v for k, v in asdict(c).items() if v is not None or k in ("baseline", "ratio")} for c in fill_ratios(cases)]
    atomic_write_json(path, {"schema_version": BENCH_SCHEMA_VERSION, "name": name, "device": str(device),
                             "versions": package_versions(), "cases": rows})
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    """A benchmark file written by `write_result`, schema-checked (`workbench.core.schemas.BenchFile`)."""
    where = str(path)
    record = require_dict(read_json(path), where, "benchmark file")
    check_version(record, where, BENCH_SCHEMA_VERSION, what="benchmark file schema")
    validate(BenchFile, record, where, fix="Rerun the benchmark: python -m workbench.bench NAME.")
    return record


# --- discovery -------------------------------------------------------------------------------


def available() -> dict[str, str]:
    """Benchmark name -> module: every module in `workbench/benchmarks/` that defines `run`.

    A benchmark is a module `workbench/benchmarks/<name>.py` with
    `run(device: torch.device, quick: bool = False) -> list[Case]`; adding the file adds it.
    """
    import workbench.benchmarks as pkg

    return {m.name: f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") and m.name != "harness"}


def load_benchmark(name: str) -> Callable[..., list[Case]]:
    found = available()
    if name not in found:
        raise unknown_name("benchmark", name, found)
    return importlib.import_module(found[name]).run


def parser() -> argparse.ArgumentParser:
    p = common.command_parser("python -m workbench.bench", __doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(sorted(available()))}")
    p.add_argument("--suite", choices=sorted(SUITES), help="a prepared set instead of names: "
                   + "; ".join(f"{k}: {v[1]}" for k, v in SUITES.items()))
    common.add_device_flag(p)
    common.add_threads_flag(p)
    common.add_out_flag(p, str(DEFAULT_OUT), "output directory")
    p.add_argument("--quick", action="store_true", help="smaller cases, for a smoke run")
    return p


def run_benchmarks(args: argparse.Namespace) -> int:
    """Check every name, then run each benchmark, write its JSON and print its cases."""
    device = common.device_of(args)
    if bool(args.names) == bool(args.suite):
        raise ConfigError("Name the benchmarks to run, or a prepared --suite (e.g. --suite gpu), one of the two; "
                          f"benchmarks: {', '.join(sorted(available()))}.")
    if args.suite:
        args.names = list(SUITES[args.suite][0])
    for name in args.names:
        load_benchmark(name)  # every name checked before any work
    for name in args.names:
        cases = load_benchmark(name)(device, quick=args.quick)
        path = write_result(name, device, cases, Path(args.out))
        print(f"{name} ({device}):")
        for c in cases:
            ratio = f"  x{c.ratio:.2f} of {c.baseline}" if c.ratio is not None else ""
            print(f"  {c.label:<32} {c.median_s:9.4f}s ± {c.iqr_s:.4f}  rss {c.peak_rss_mb:7.0f} MB{ratio}")
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.run(run_benchmarks, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
