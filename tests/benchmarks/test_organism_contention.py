"""The "organism build under contention" rows: each thread count quiet and beside busy processes,
the loaded row's ratio against its quiet one, the load average beside each, and no busy process
left behind."""

from __future__ import annotations

import time

import psutil
import pytest
import torch

from workbench.benchmarks.harness import competing_load, read_result, write_result
from workbench.benchmarks.organism import contention


def test_competing_load_runs_busy_children_and_ends_them():
    me = psutil.Process()
    before = {c.pid for c in me.children()}  # e.g. a process pool's resource tracker an earlier test started
    with competing_load(2):
        children = [c for c in me.children() if c.pid not in before]
        assert len(children) == 2 and all(c.is_running() for c in children)
        used = [sum(c.cpu_times()[:2]) for c in children]
        time.sleep(0.3)
        assert all(sum(c.cpu_times()[:2]) > u for c, u in zip(children, used))  # busy, not sleeping
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)
    assert [c for c in me.children() if c.pid not in before] == []


def test_contention_rows_pair_loaded_with_quiet_and_record_the_load(tmp_path):
    before = torch.get_num_threads()
    cases = contention(steps=3, threads=(1,), busy=1)
    assert torch.get_num_threads() == before  # thread count given back
    assert [c.label for c in cases] == ["contention/threads1/quiet", "contention/threads1/loaded"]
    quiet, loaded = cases
    assert quiet.baseline is None and loaded.baseline == "contention/threads1/quiet"
    assert quiet.extra["busy_processes"] == 0 and loaded.extra["busy_processes"] == 1
    for c in cases:
        assert c.median_s > 0 and c.extra["steps"] == 3
        assert len(c.extra["loadavg"]) == 1 and len(c.extra["loadavg"][0]) == 3  # 1, 5, 15 min
    data = read_result(write_result("organism", torch.device("cpu"), cases, tmp_path))
    assert data["cases"][1]["ratio"] == pytest.approx(loaded.median_s / quiet.median_s)
