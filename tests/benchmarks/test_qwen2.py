"""The qwen2 benchmark's tiny configuration runs end to end through `python -m workbench.bench`
(structure only: every case, baseline and figure present; no timing asserts)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def test_quick_qwen2_benchmark_writes_every_case(tmp_path, capsys):
    from workbench.benchmarks.harness import main

    assert main(["qwen2", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "qwen2.json").read_text())
    cases = {c["label"]: c for c in out["cases"]}
    assert set(cases) == {
        "alignment/loop", "alignment/jvp_func", "alignment/forward", "alignment/vmap_grad",
        "alignment/vmap_grad/budget_rows", "alignment/vmap_grad/budget_keys",
        "capture/forward", "capture/last", "capture/mean", "capture/all",
        "trait/forward", "trait/p_answers", "trait/sampled"}
    for label, c in cases.items():
        base = label.split("/")[0] + ("/loop" if label.startswith("alignment") else "/forward")
        assert c["baseline"] == (None if label == base else base) and (c["ratio"] is None) == (label == base)
    for label in ("alignment/jvp_func", "alignment/vmap_grad", "alignment/vmap_grad/budget_keys"):
        assert cases[label]["extra"]["max_rel_err_vs_loop"] < 1e-4  # every path scores what the loop does
    old, keys = cases["alignment/vmap_grad"]["extra"], cases["alignment/vmap_grad/budget_keys"]["extra"]
    assert old["grad_bytes_planned"] == old["grad_bytes_old_path"] and old["grad_calls"] == 1
    assert keys["grad_bytes_planned"] <= keys["budget_bytes"] < old["grad_bytes_old_path"] and keys["grad_calls"] > 1
    assert cases["trait/p_answers"]["extra"]["prompts"] == 2
    assert "alignment/jvp_func" in capsys.readouterr().out
