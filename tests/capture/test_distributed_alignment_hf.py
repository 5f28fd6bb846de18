"""torchrun alignment scores on Hugging Face directories (a tiny toy Qwen2 lineage): a 2-process
`gloo` run of `python -m workbench.align_rows --base ... --teacher ...` gives the bytes of one
process (sha256 of every file). One launch (~15-30 s of start-up); the kill-and-resume path is the
organism's test (tests/capture/test_distributed_alignment.py), the same protocol."""

from __future__ import annotations

import pytest
from test_distributed import torchrun, tree_sha  # tests/capture/test_distributed.py

from workbench.core.file_hashes import CACHE_ENV

pytest.importorskip("transformers")


def test_two_processes_on_hf_directories_equal_one_byte_for_byte(tmp_path, monkeypatch):
    from workbench.cli.align_rows import main
    from workbench.core.toy_hf import ToySpec, write_toy_lineage

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file-sha256.json"))  # the ranks share it, as on one machine
    toy = write_toy_lineage(tmp_path / "toy", ToySpec(lora_student=False))

    def args(out):  # 16 + 16 rows in 4 batches of 8, along the teacher delta and g_trait: 8 jobs, 16 shards
        return ["--base", toy.dirs["base"], "--teacher", toy.dirs["teacher"], "--data", toy.data, "--target", "owl",
                "--directions", "delta_T", "g_trait", "--batch-size", "8", "--threads", "1", "--quiet", "--out", str(out)]

    assert main(args(tmp_path / "one")) == 0
    two = torchrun(["-m", "workbench.align_rows"], args(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    got = tree_sha(tmp_path / "two")
    assert len([p for p in got if p.startswith("shards/")]) == 16
    assert got == tree_sha(tmp_path / "one")  # every file, manifest (and its plan) included
