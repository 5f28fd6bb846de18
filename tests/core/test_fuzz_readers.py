"""Property-based fuzzing of every reader: random, mutated-valid, truncated and byte-spliced
documents either load or raise a WorkbenchError (`workbench.benchmarks._fuzz_readers`). The suite
runs 150 examples per reader; `python -m workbench.bench fuzz` runs 500."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from workbench.benchmarks._fuzz_readers import READERS, fuzz_reader  # noqa: E402
from workbench.benchmarks.harness import available  # noqa: E402

EXAMPLES = 150


@pytest.mark.parametrize("reader", list(READERS))
def test_reader_loads_or_raises_a_workbench_error(reader, tmp_path):
    counts = fuzz_reader(reader, EXAMPLES, tmp_path, seed=1)
    assert counts.foreign == 0, "\n".join(counts.failures)
    assert counts.examples >= 100
    assert counts.rejected > 0  # the generator does produce bad documents
    assert counts.loaded + counts.rejected == counts.examples


def test_every_reader_is_fuzzed_and_the_benchmark_is_registered():
    assert set(READERS) >= {"organism_manifest", "model_metadata", "activation_manifest", "result_file",
                            "jsonl_token_rows", "jsonl_text_rows", "jsonl_chat_rows", "contrast_prompts", "organism_tokenizer",
                            "bench_file", "command_line"}
    assert "fuzz" in available() and "_fuzz_readers" not in available()
