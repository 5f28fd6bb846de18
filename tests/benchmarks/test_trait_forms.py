"""The trait_forms benchmark's quick configuration runs end to end through `python -m workbench.bench`:
every case against its baseline, the trie's rows and reads below the naive layout's, the same scores."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def test_quick_trait_forms_benchmark_writes_every_case(tmp_path):
    from workbench.benchmarks.harness import main

    assert main(["trait_forms", "--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    cases = {c["label"]: c for c in json.loads((tmp_path / "trait_forms.json").read_text())["cases"]}
    assert set(cases) == {"trait_forms/naive", "trait_forms/trie", "trait_forms/naive_grad", "trait_forms/trie_grad"}
    assert cases["trait_forms/trie"]["baseline"] == "trait_forms/naive"
    assert cases["trait_forms/trie_grad"]["baseline"] == "trait_forms/naive_grad"
    naive, trie = cases["trait_forms/naive"]["extra"], cases["trait_forms/trie"]["extra"]
    assert naive["rows"] == naive["prompts"] * naive["forms"] == 3 * trie["forms"]
    assert trie["rows"] < naive["rows"] and trie["reads"] < naive["reads"]
    assert trie["max_abs_diff_vs_naive"] < 1e-5 and cases["trait_forms/trie_grad"]["extra"]["rows_ratio_vs_naive"] < 1
