"""The memory benchmark's structure on a tiny Qwen2 lineage (no byte or time thresholds)."""

import math

import torch

from workbench.benchmarks import memory


def test_memory_table_structure(tmp_path):
    dirs = memory.build_dirs(tmp_path, memory.QUICK)
    assert set(dirs) == {"base", "teacher", "student", "control"}
    r = memory.measure("weights", dirs, "cpu", memory.QUICK)  # in process: the same code the subprocess runs
    assert r["n_params"] == memory.n_params(memory.QUICK)
    assert r["model_bytes"] == 4 * r["n_params"] and r["extra_bytes"] >= 0
    cases = memory.run(torch.device("cpu"), quick=True, sections=("delta_patching", "alignment"))  # fresh subprocesses
    assert [c.label for c in cases] == ["delta_patching", "alignment"]
    assert cases[1].extra["memory_budget_bytes"] == memory.ALIGN_BUDGET and "memory_budget_bytes" not in cases[0].extra
    for c in [memory.table_case(r, "cpu"), *cases]:
        e = c.extra
        assert set(e) >= {"extra_bytes_per_param", "extra_over_model", "projection_7.6B_gb", "model_bytes"}
        assert all(math.isfinite(e[k]) and e[k] >= 0 for k in ("extra_bytes_per_param", "extra_over_model"))
        assert abs(e["projection_7.6B_gb"] - e["extra_over_model"] * 15.2) < 1e-9 and c.peak_rss_mb > 0
    table = memory.format_table(cases)
    assert table.splitlines()[1].startswith("delta_patching")
    assert table.splitlines()[2].startswith("alignment") and "memory_budget_bytes 64 MiB" in table.splitlines()[2]
