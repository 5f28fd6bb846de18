"""torchrun capture: 2 `gloo` processes write the same bytes as one; a rank killed mid-capture
and a rerun give the same bytes, rewriting only the shards that were missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.capture.store import LEDGER, RankWriter
from workbench.core.distributed import RankInfo, rank_info, shard_slice
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs, write_jsonl
from workbench.core.models import boot_native, save_model

REPO = Path(__file__).resolve().parents[2]
CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=20, n_ctx=12, act_fn="gelu",
           normalization_type="LN")
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]

_KILL_RANK_1 = """
import os, signal, sys, time
from workbench.capture import store
write, written = store.StoreWriter.write_shard, []
def write_then_die(self, spec, tensor):
    write(self, spec, tensor)
    written.append(spec)
    if os.environ["RANK"] == "1" and len(written) == 2:  # rank 1 dies after its first chunk (one file per hook)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.1)
store.StoreWriter.write_shard = write_then_die
from workbench.cli.capture import main
sys.exit(main(sys.argv[1:]))
"""


def tree_sha(directory: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def organism(tmp_path_factory) -> Path:
    """A seed directory of two tiny native models and 40 token-id rows (rows.jsonl beside it)."""
    root = tmp_path_factory.mktemp("org")
    for i, name in enumerate(("base", "teacher")):
        save_model(root / "seed0" / "models" / name, boot_native({**CFG, "seed": i}), meta={"role": name})
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 20, (3,), generator=g).tolist() for _ in range(40)]
    comps = [torch.randint(1, 20, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist() for _ in range(40)]
    write_jsonl(root / "rows.jsonl", Inputs.from_sequences(prompts, comps, "test").to_rows())
    return root


def args(organism: Path, out: Path) -> list[str]:
    return ["--organism", str(organism), "--data", str(organism / "rows.jsonl"), "--hooks", *HOOKS,
            "--batch-size", "4", "--shard-rows", "8", "--out", str(out), "--quiet"]


def torchrun(target: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *target, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def one_process(organism, tmp_path_factory) -> dict[str, str]:
    """sha256 of every file of a plain one-process capture (one thread, like the torchrun ranks)."""
    from workbench.cli.capture import main

    out = tmp_path_factory.mktemp("one") / "art"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args(organism, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return tree_sha(out)


def test_rank_info_reads_the_launcher_environment():
    assert rank_info({}) == RankInfo(0, 1, 0) and not rank_info({}).distributed
    assert rank_info({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == RankInfo(1, 2, 1)
    with pytest.raises(ConfigError, match="RANK=2, WORLD_SIZE=2"):
        rank_info({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        rank_info({"WORLD_SIZE": "two"})


@pytest.mark.parametrize("n, world", [(0, 2), (5, 1), (7, 3), (2, 4)])
def test_shard_slice_gives_every_item_to_exactly_one_rank(n, world):
    slices = [shard_slice(n, RankInfo(r, world, r)) for r in range(world)]
    assert sorted(i for s in slices for i in s) == list(range(n))
    assert all(i % world == r for r, s in enumerate(slices) for i in s)


def test_a_rank_writer_never_writes_the_manifest(tmp_path):
    with pytest.raises(ConfigError, match="ranks > 0"):
        RankWriter(tmp_path, {}, rank=0)
    with RankWriter(tmp_path, {"kind": "activations"}, rank=1) as w, pytest.raises(ConfigError, match="Only rank 0"):
        w.finish([], "")


def test_two_gloo_processes_write_the_bytes_of_one(organism, one_process, tmp_path):
    out = tmp_path / "two"
    run = torchrun(["-m", "workbench.capture"], args(organism, out))
    assert run.returncode == 0, run.stderr[-3000:]
    got = tree_sha(out)
    assert len([p for p in got if p.startswith("shards/")]) == 20  # 2 models x 2 hooks x 5 shards
    assert got == one_process  # sha256 of every file, manifest included; no ledger left behind


def test_a_rank_killed_mid_capture_then_a_rerun_gives_the_same_bytes(organism, one_process, tmp_path):
    out = tmp_path / "killed"
    script = tmp_path / "kill_rank_1.py"
    script.write_text(_KILL_RANK_1)
    killed = torchrun([str(script)], args(organism, out))
    assert killed.returncode != 0
    assert not (out / "manifest.json").exists()
    ledgers = sorted(p.name for p in out.glob(".written*.jsonl"))
    assert ".written.rank1.jsonl" in ledgers and LEDGER in ledgers
    vouched: dict[str, int] = {}
    for name in ledgers:  # shard files some ledger vouches for
        for line in (out / name).read_text().splitlines():
            entry = json.loads(line)
            path = out / entry["path"]
            if path.is_file() and tree_sha(path.parent).get(path.name) == entry["sha256"]:
                vouched[entry["path"]] = path.stat().st_ino
    chunks: dict[tuple[str, str], list[str]] = {}
    for rel in vouched:  # shards/{model}/{hook}/{index}.safetensors; a chunk is kept when all its hooks are
        _, model, _, index = rel.split("/")
        chunks.setdefault((model, index), []).append(rel)
    kept = {rel: vouched[rel] for files in chunks.values() if len(files) == len(HOOKS) for rel in files}
    assert any(rel.startswith("shards/base/") and rel.endswith("/00001.safetensors")
               for rel in kept)  # rank 1's first job (base, chunk 1) survived its death
    assert 2 <= len(kept) < 20

    rerun = torchrun(["-m", "workbench.capture"], args(organism, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert tree_sha(out) == one_process
    assert {p: (out / p).stat().st_ino for p in kept} == kept  # finished chunks were not written again


def test_the_command_names_the_models_once(organism, tmp_path, capsys):
    from workbench.cli.capture import main

    base = ["--data", str(organism / "rows.jsonl"), "--hooks", HOOKS[0], "--out", str(tmp_path / "a")]
    assert main(base) == 2 and "--organism DIR" in capsys.readouterr().err
    assert main([*base, "--organism", str(organism), "--base", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--organism", str(organism), "--positions", "0,x"]) == 2
    assert "--positions '0,x'" in capsys.readouterr().err


def test_ranks_outside_the_process_group_are_refused(organism, tmp_path):
    from workbench.capture.capture import capture
    from workbench.organism.load import load_lineage

    lin = load_lineage(organism / "seed0")
    x = Inputs.from_jsonl(organism / "rows.jsonl", limit=4)
    with pytest.raises(ConfigError, match="not this process's place"):
        capture(lin, x, HOOKS, out_dir=tmp_path / "a", progress=False, ranks=RankInfo(1, 2, 1))
    assert not (tmp_path / "a").exists()
