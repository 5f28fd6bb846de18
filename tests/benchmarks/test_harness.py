import json
import time

import pytest

from workbench.benchmarks.harness import Case, main, read_result, time_case, time_interleaved, write_result
from workbench.core.errors import WorkbenchError


def test_time_case_and_ratio_against_baseline(tmp_path):
    slow = time_case("slow", lambda: time.sleep(0.02), runs=3, warmup=0)
    fast = time_case("fast", lambda: time.sleep(0.005), runs=3, warmup=0, baseline="slow")
    assert slow.median_s >= 0.02 and fast.median_s >= 0.005 and slow.peak_rss_mb > 0
    path = write_result("demo", "cpu", [slow, fast], tmp_path)
    data = json.loads(path.read_text())
    assert set(data) == {"schema_version", "name", "device", "versions", "cases"}
    assert read_result(path) == data  # the schema accepts what the harness writes
    row = data["cases"][1]
    assert set(row) >= {"label", "runs", "median_s", "iqr_s", "peak_rss_mb", "baseline", "ratio"}
    assert row["ratio"] == pytest.approx(fast.median_s / slow.median_s) and row["ratio"] < 1


def test_unknown_baseline_and_benchmark_are_errors(tmp_path, capsys):
    with pytest.raises(WorkbenchError, match="unknown baseline"):
        write_result("demo", "cpu", [Case("a", 1, 1.0, 0.0, 1.0, baseline="nope")], tmp_path)
    assert main(["organizm", "--out", str(tmp_path)]) == 2
    assert "organism" in capsys.readouterr().err


def test_time_interleaved_pairs_rounds_against_the_baseline():
    order = []
    fns = {"slow": lambda: (order.append("slow"), time.sleep(0.02)), "fast": lambda: (order.append("fast"), time.sleep(0.005))}
    cases = time_interleaved(fns, baseline="slow", runs=3, warmup=1)
    assert order == ["slow", "fast"] * 4  # one call of each per round, warmup round included
    slow, fast = cases
    assert slow.baseline is None and fast.baseline == "slow" and slow.runs == fast.runs == 3
    assert 0 < fast.extra["paired_ratio_median"] < 1
    with pytest.raises(WorkbenchError, match="Baseline 'nope'"):
        time_interleaved(fns, baseline="nope")


def test_peak_rss_counts_child_processes_only_when_asked():
    """A child holding ~300 MB: PeakRSS(children=True) sees it, the parent-only reading does not."""
    import subprocess
    import sys

    from workbench.benchmarks.harness import PeakRSS

    hold = "import sys, time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(1.5)"
    with PeakRSS() as own, PeakRSS(children=True) as both:
        child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
        assert child.stdout.readline().strip() == b"1"  # the memory is touched
        time.sleep(0.3)
        child.wait()
    assert both.peak_mb - own.peak_mb > 250
