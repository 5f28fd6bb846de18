"""Capture: exact against a plain run_with_cache, every position rule, hook-name checks, resume."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.capture.capture import capture, plan_capture
from workbench.capture.hooks import HEAD_INPUT, hook_aliases, resolve_hooks, run_cached, stop_layer
from workbench.core.errors import ArtifactError, ConfigError, DataError, LockError, UnknownNameError
from workbench.core.inputs import Inputs
from workbench.core.io import exclusive_lock
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native, save_model

REPO = Path(__file__).resolve().parents[2]
CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=20, n_ctx=12, act_fn="gelu",
           normalization_type="LN")
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def small_lineage() -> Lineage:
    return Lineage.from_models({"base": boot_native({**CFG, "seed": 0}), "teacher": boot_native({**CFG, "seed": 1})})


def small_inputs(n: int = 23, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, 20, (3,), generator=g).tolist() for _ in range(n)]
    completions = [torch.randint(1, 20, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    return Inputs.from_sequences(prompts, completions, "test", pad_id=0)


def tree_sha(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lin():
    return small_lineage()


@pytest.fixture(scope="module")
def reference(lin) -> dict[tuple[str, str], list[torch.Tensor]]:
    """Naive: every row alone, unpadded, the whole model, no stop_at_layer."""
    x, out = small_inputs(), {}
    for name in lin.names:
        for i in range(len(x)):
            with torch.inference_mode():
                _, cache = lin[name].run_with_cache(x.tokens[i:i + 1, : int(x.lengths[i])], names_filter=HOOKS)
            for hook in HOOKS:
                out.setdefault((name, hook), []).append(cache[hook][0])
    return out


@pytest.mark.parametrize("positions", ["all", "last", "mean", [0, 2]])
def test_capture_matches_row_by_row_reference(lin, reference, tmp_path, positions):
    x = small_inputs()
    store = capture(lin, x, HOOKS, positions=positions, out_dir=tmp_path, batch_size=5, shard_rows=7, progress=False)
    assert store.models == ["base", "teacher"] and store.hooks == HOOKS and len(store) == len(x)
    for name in lin.names:
        for hook in HOOKS:
            got = store.read(name, hook)
            for i, r in enumerate(reference[name, hook]):
                if positions == "all":
                    want = torch.zeros(got.shape[1:])
                    want[: r.shape[0]] = r
                elif positions == "last":
                    want = r[-1]
                elif positions == "mean":
                    want = r[x.mask[i, : r.shape[0]]].mean(0)
                else:
                    want = r[positions]
                torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(store.read("teacher", HOOKS[1], rows=slice(5, 16)), store.read("teacher", HOOKS[1])[5:16])
    assert torch.equal(store.inputs.tokens, x.tokens) and store.inputs.content_hash() == x.content_hash()


def test_storage_dtype_and_lazy_read_touch_only_needed_shards(lin, tmp_path):
    x = small_inputs()
    store = capture(lin, x, HOOKS, positions="last", out_dir=tmp_path, batch_size=4, shard_rows=8,
                    storage_dtype="bfloat16", progress=False)
    assert store.read("base", HOOKS[0]).dtype == torch.bfloat16
    # corrupt every shard except the one holding rows 8..15 of base/HOOKS[0]: that read still works
    keep = "shards/base/blocks.0.hook_resid_post/00001.safetensors"
    for s in store.manifest["shards"]:
        if s["path"] != keep:
            p = tmp_path / s["path"]
            p.write_bytes(p.read_bytes()[:-1] + b"\x00")
    fresh = type(store).open(tmp_path)
    assert fresh.read("base", HOOKS[0], rows=slice(9, 14)).shape == (5, 16)
    assert fresh._verified == {keep}


def test_alias_hooks_are_stored_once_and_readable_by_any_name(lin, tmp_path):
    names, aliases = resolve_hooks(lin["base"], ["blocks.0.hook_resid_post", "blocks.0.hook_out"])
    assert names == ["blocks.0.hook_resid_post"] and "blocks.0.hook_out" in aliases["blocks.0.hook_resid_post"]
    store = capture(lin, small_inputs(), ["blocks.0.hook_out", "blocks.0.hook_resid_post"], positions="last",
                    out_dir=tmp_path, progress=False)
    assert store.hooks == ["blocks.0.hook_resid_post"]
    assert len({s["hook"] for s in store.manifest["shards"]}) == 1
    assert torch.equal(store.read("base", "blocks.0.hook_out"), store.read("base", "blocks.0.hook_resid_post"))
    assert "hook_embed" in hook_aliases(lin["base"])  # classic names win over structural ones


def test_bad_hook_names_get_suggestions_before_any_work(lin, tmp_path):
    with pytest.raises(UnknownNameError, match=r"blocks\.0\.hook_resid_post"):
        capture(lin, small_inputs(), ["blocks.0.hook_resid_pst"], out_dir=tmp_path, progress=False)
    assert not (tmp_path / "shards").exists()
    with pytest.raises(UnknownNameError, match="last"):
        capture(lin, small_inputs(), HOOKS, positions="lats", out_dir=tmp_path, progress=False)
    with pytest.raises(UnknownNameError, match="teacher"):
        capture(lin, small_inputs(), HOOKS, roles=["teachr"], out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="no position axis"):
        capture(lin, small_inputs(), ["blocks.0.attn.hook_pattern"], out_dir=tmp_path, progress=False)


def test_bad_positions_and_data_are_clear_errors(lin, tmp_path):
    x = small_inputs()
    with pytest.raises(DataError, match="past the end"):
        capture(lin, x, HOOKS, positions=[10], out_dir=tmp_path, progress=False)
    no_completion = Inputs.from_sequences([[1, 2], [3, 4]], [[5], []], "t")
    with pytest.raises(DataError, match="no counted position"):
        capture(lin, no_completion, HOOKS, positions="mean", out_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="outside the vocabulary"):
        capture(lin, Inputs.from_sequences([[1, 99]], [[2]], "t"), HOOKS, out_dir=tmp_path, progress=False)
    with pytest.raises(UnknownNameError, match="float16"):
        capture(lin, x, HOOKS, out_dir=tmp_path, storage_dtype="fp8", progress=False)


def test_stop_at_layer_is_just_past_the_deepest_hook(lin):
    assert stop_layer(["blocks.0.hook_resid_post"], 4) == 1
    assert stop_layer(["hook_embed"], 4) == 0
    assert stop_layer(["blocks.3.hook_resid_post"], 4) is None
    assert stop_layer(["blocks.0.hook_resid_post", "ln_final.hook_normalized"], 4) is None
    plan = plan_capture(lin, small_inputs(), ["blocks.0.hook_resid_post"], "last")
    assert plan.stop_at_layer == 1 and plan.nbytes == 2 * 23 * 16 * 4


def _head_calls(bridge, hooks, stop):
    """(cache of run_cached, how often the unembedding ran, the stop point's hooks after the run)."""
    calls = []
    handle = bridge.hook_dict["unembed.hook_in"].add_hook(lambda t, hook: calls.append(1))
    try:
        with torch.inference_mode():
            cache = run_cached(bridge, small_inputs(4).tokens, hooks, stop)
    finally:
        handle.hook.remove()
        bridge.hook_dict["unembed.hook_in"].fwd_hooks.clear()
    return cache, len(calls), len(bridge.hook_dict[HEAD_INPUT].fwd_hooks)


@pytest.mark.parametrize("family", ["native", "qwen2"])
def test_a_capture_ending_in_the_last_block_skips_the_unembedding(lin, family, tmp_path):
    """Reading the last block stops before the final norm and the logits, with the same cache."""
    if family == "native":
        bridge = lin["base"]
    else:
        from workbench.core.toy_hf import ToySpec, write_toy_lineage

        toy = write_toy_lineage(tmp_path, ToySpec(family="qwen2", lora_student=False))
        bridge = Lineage.from_hf_dirs({"base": toy.dirs["base"]})["base"]
    last = f"blocks.{int(bridge.cfg.n_layers) - 1}.hook_resid_post"
    with torch.inference_mode():
        _, full = bridge.run_with_cache(small_inputs(4).tokens, names_filter=[last, "ln_final.hook_normalized"])
    cache, calls, left = _head_calls(bridge, [last], None)
    assert calls == 0 and left == 0  # stopped before the head; the stop hook is gone afterwards
    assert torch.equal(cache[last], full[last])
    cache, calls, _ = _head_calls(bridge, [last, "ln_final.hook_normalized"], None)
    assert calls == 1 and torch.equal(cache["ln_final.hook_normalized"], full["ln_final.hook_normalized"])


def test_rerun_reuses_a_finished_capture_and_refuses_a_different_one(lin, tmp_path):
    x = small_inputs()
    capture(lin, x, HOOKS, positions="last", out_dir=tmp_path, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")}
    capture(lin, x, HOOKS, positions="last", out_dir=tmp_path, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")} == before
    with pytest.raises(ArtifactError, match="overwrite=True"):
        capture(lin, x, HOOKS, positions="mean", out_dir=tmp_path, progress=False)
    store = capture(lin, x, HOOKS[:1], positions="mean", out_dir=tmp_path, overwrite=True, progress=False)
    assert store.positions == "mean" and all(s["hook"] == HOOKS[0] for s in store.manifest["shards"])
    assert {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "shards").rglob("*.safetensors")} == {
        s["path"] for s in store.manifest["shards"]}


def test_a_second_writer_is_locked_out(lin, tmp_path):
    with exclusive_lock(tmp_path / ".lock"), pytest.raises(LockError, match="Another process"):
        capture(lin, small_inputs(), HOOKS, out_dir=tmp_path, progress=False)


_KILLED_WRITER = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from workbench.capture import store
from workbench.capture.capture import capture
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import load_model
write = store.StoreWriter.write_shard
def slow_write(self, spec, tensor):
    write(self, spec, tensor)
    print("wrote", spec.path, flush=True)
    time.sleep(0.3)
store.StoreWriter.write_shard = slow_write
models = sys.argv[1]
lin = Lineage.from_models({n: load_model(f"{models}/{n}") for n in ("base", "teacher")})
x = Inputs.from_jsonl(f"{models}/inputs.jsonl")
capture(lin, x, %r, positions="all", out_dir=sys.argv[2], batch_size=4, shard_rows=8, progress=False)
"""


def test_sigkill_mid_capture_then_resume_is_byte_identical_to_a_clean_run(lin, tmp_path):
    from workbench.core.inputs import write_jsonl

    models = tmp_path / "models"
    for name in lin.names:
        save_model(models / name, lin[name])
    x = small_inputs(40)
    write_jsonl(models / "inputs.jsonl", x.to_rows())
    x = Inputs.from_jsonl(models / "inputs.jsonl")
    clean = capture(lin, x, HOOKS, positions="all", out_dir=tmp_path / "clean", batch_size=4, shard_rows=8, progress=False)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER % HOOKS, str(models), str(killed), str(torch.get_num_threads())],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        written = 0
        while written < 3 and time.monotonic() < deadline:  # kill after three shards, mid-capture
            line = proc.stdout.readline()
            if not line:
                break
            written += line.startswith("wrote")
        assert written == 3, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "manifest.json").exists()
    with pytest.raises(ArtifactError, match="interrupted"):
        type(clean).open(killed)
    n_before = len(list((killed / "shards").rglob("*.safetensors")))
    assert 3 <= n_before < len(clean.manifest["shards"])
    # a temp file left by a write the kill interrupted is cleaned up
    (killed / "shards/base/blocks.0.hook_resid_post/.00004.safetensors.x1y2.tmp").write_bytes(b"partial")

    resumed = capture(lin, x, HOOKS, positions="all", out_dir=killed, batch_size=4, shard_rows=8, progress=False)
    assert tree_sha(killed) == tree_sha(tmp_path / "clean")
    assert len(resumed.manifest["shards"]) == len(clean.manifest["shards"])


def test_capture_benchmark_quick_reports_every_case():
    from workbench.benchmarks.capture import run

    cases = {c.label: c for c in run(torch.device("cpu"), quick=True)}
    assert set(cases) == {"forward", "capture/last", "capture/mean", "capture/all", "rss/all x1", "rss/all x10",
                          "ranks/1", "ranks/1 all threads", "ranks/2"}
    assert all(c.median_s > 0 and c.peak_rss_mb > 0 for c in cases.values())
    assert cases["capture/last"].baseline == "forward" and cases["rss/all x10"].extra["rows"] == 10 * cases["rss/all x1"].extra["rows"]
    assert cases["ranks/2"].baseline == "ranks/1" and cases["ranks/2"].extra["identical"] is True
    assert cases["ranks/2"].extra["processes"] == 2 and cases["ranks/2"].extra["throughput_ratio_vs_1"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capture_on_cuda_matches_cpu(tmp_path):
    x = small_inputs()
    cpu = capture(small_lineage(), x, HOOKS, positions="mean", out_dir=tmp_path / "cpu", progress=False)
    gpu = capture(small_lineage(), x, HOOKS, positions="mean", out_dir=tmp_path / "gpu", device="cuda", progress=False)
    assert gpu.manifest["device_type"] == "cuda"
    for hook in HOOKS:
        torch.testing.assert_close(gpu.read("teacher", hook), cpu.read("teacher", hook), atol=1e-4, rtol=1e-4)
