"""The sweep benchmark's quick configuration runs end to end through `python -m workbench.bench`:
every case against its regime's plain training, curves at the stated checkpoints, the LoRA
student training fewer parameters than the full one."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")


def test_quick_sweep_benchmark_writes_every_case(tmp_path):
    from workbench.benchmarks.harness import main
    from workbench.benchmarks.sweep import CHECKPOINTS

    assert main(["sweep", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    cases = {c["label"]: c for c in json.loads((tmp_path / "sweep.json").read_text())["cases"]}
    kinds = ("train", "train_curves", "first_order", "cell")
    assert set(cases) == {f"sweep/{r}/{k}" for r in ("lora", "full") for k in kinds}
    for regime in ("lora", "full"):
        for kind in kinds[1:]:
            assert cases[f"sweep/{regime}/{kind}"]["baseline"] == f"sweep/{regime}/train"
            assert cases[f"sweep/{regime}/{kind}"]["ratio"] > 0
        extra = cases[f"sweep/{regime}/train_curves"]["extra"]
        assert min(CHECKPOINTS, extra["steps"]) <= extra["checkpoints"] <= 2 * CHECKPOINTS
        first = cases[f"sweep/{regime}/cell"]["extra"]["first_order"]  # the cell computed its first-order row
        assert first is not None and len(first["predicted"]) == len(first["measured"]) >= 1
    assert 0 < cases["sweep/lora/cell"]["extra"]["trained_params"] < cases["sweep/full/cell"]["extra"]["trained_params"]
