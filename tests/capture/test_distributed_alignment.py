"""torchrun alignment scores (`python -m workbench.align_rows`): a rank killed mid-run, then a
2-process `gloo` rerun that computes only the batches that were missing, give the bytes of one
process (sha256 of every file). Two launches only (each costs ~15-30 s of start-up): the clean
2-process path is the same protocol as the capture's (tests/capture/test_distributed.py, whose
launcher helpers this reuses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_distributed import torchrun, tree_sha  # tests/capture/test_distributed.py

_KILL_RANK_1 = """
import os, signal, sys
from workbench.capture import store
write, written = store.StoreWriter.write_shard, []
def write_then_die(self, spec, tensor):
    write(self, spec, tensor)
    written.append(spec)
    if os.environ["RANK"] == "1" and len(written) == 2:  # rank 1 dies after its first batch (a_{i,t}, a_i)
        os.kill(os.getpid(), signal.SIGKILL)
store.StoreWriter.write_shard = write_then_die
from workbench.cli.align_rows import main
sys.exit(main(sys.argv[1:]))
"""


def args(organism: Path, out: Path) -> list[str]:
    """20 + 20 rows in 5 batches of 8, along the teacher delta and g_trait: 10 jobs, 20 shards."""
    return ["--organism", str(organism), "--seeds", "0", "--max-rows", "20", "--batch-size", "8",
            "--out", str(out), "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def organism(tiny_organism) -> Path:
    return tiny_organism.directory.parent


@pytest.fixture(scope="module")
def one_process(organism, tmp_path_factory) -> dict[str, str]:
    """sha256 of every file of a plain one-process run (one thread, like the torchrun ranks)."""
    from workbench.cli.align_rows import main

    out = tmp_path_factory.mktemp("one") / "rows"
    assert main(args(organism, out)) == 0
    return tree_sha(out / "seed0")


def test_a_rank_killed_mid_run_then_a_rerun_computes_only_the_missing_batches(organism, one_process, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "kill_rank_1.py"
    script.write_text(_KILL_RANK_1)
    killed = torchrun([str(script)], args(organism, out))
    assert killed.returncode != 0
    seed = out / "seed0"
    assert not (seed / "manifest.json").exists()
    kept = {}
    for ledger in seed.glob(".written*.jsonl"):
        for line in ledger.read_text().splitlines():
            entry = json.loads(line)
            path = seed / entry["path"]
            if path.is_file() and tree_sha(path.parent).get(path.name) == entry["sha256"]:
                kept[entry["path"]] = path.stat().st_ino
    assert "shards/delta_T/total/00001.safetensors" in kept  # rank 1's first batch survived its death
    assert 2 <= len(kept) < 20
    rerun = torchrun(["-m", "workbench.align_rows"], args(organism, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = tree_sha(seed)
    assert len([p for p in got if p.startswith("shards/")]) == 20  # 2 directions x 5 batches x (a_i, a_{i,t})
    assert got == one_process  # every file, manifest included; no ledger left behind
    assert {p: (seed / p).stat().st_ino for p in kept} == kept  # batches already written were not written again
    from workbench.analyses.score_store import ScoreStore

    s = ScoreStore.open(seed)
    assert s.directions == ["delta_T", "g_trait"] and s.n_rows == 40 and bool(s.total("g_trait").abs().sum() > 0)
