"""The prepared GPU check (`python -m workbench.bench --suite gpu`): its reduced mode runs here on a
CPU so the script cannot rot (every row of the JSON, its baseline, ratio, absolute time, peak memory
and agreement with the naive loop); the full mode (0.5B and 1.5B shapes in bf16) needs CUDA."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from workbench.benchmarks.gpu import REDUCED, SIZES, expected_labels  # noqa: E402
from workbench.benchmarks.harness import main  # noqa: E402


def _check(path, sizes) -> dict:
    out = json.loads(path.read_text())
    cases = {c["label"]: c for c in out["cases"]}
    assert list(cases) == expected_labels(sizes)  # every row, in order: no group failed
    for label, c in cases.items():
        group = label.split("/")[0] + "/" + label.split("/")[1]
        base = group + {"capture": "/hf_sdpa", "trait": "/forward", "alignment": "/loop"}[label.split("/")[1]]
        assert c["baseline"] == (None if label == base else base)
        assert (c["ratio"] is None) == (label == base) and c["median_s"] > 0
        assert c["extra"]["peak_bytes"] >= 0 and c["extra"]["rows_per_s"] > 0 and "loadavg_1m" in c["extra"]
    return cases


def test_reduced_gpu_suite_writes_every_row(tmp_path, capsys):
    assert main(["--suite", "gpu", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    cases = _check(tmp_path / "gpu.json", REDUCED)
    for label in ("tiny/alignment/func", "native-tiny/alignment/explicit", "native-tiny/alignment/func"):
        assert cases[label]["extra"]["max_rel_err_vs_loop"] < 1e-4  # every path scores what the naive loop does
    assert cases["tiny/capture/hf_sdpa"]["extra"]["dtype"] == "float32"
    assert "native-tiny/alignment/explicit" in capsys.readouterr().out  # the table


def test_full_mode_needs_a_gpu_and_one_of_names_or_suite(tmp_path, capsys):
    if not torch.cuda.is_available():
        assert main(["--suite", "gpu", "--device", "cpu", "--out", str(tmp_path)]) == 2
        assert "--quick for the reduced mode" in capsys.readouterr().err
    assert main(["--out", str(tmp_path)]) == 2
    assert main(["gpu", "--suite", "gpu", "--out", str(tmp_path)]) == 2
    assert "one of the two" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the full gpu suite needs CUDA")
def test_full_gpu_suite(tmp_path):
    assert main(["--suite", "gpu", "--device", "cuda", "--out", str(tmp_path)]) == 0
    cases = _check(tmp_path / "gpu.json", SIZES)
    assert cases["1.5b/capture/hf_sdpa"]["extra"]["n_params"] > 1.2e9
