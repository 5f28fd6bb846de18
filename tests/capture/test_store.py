"""The artifact store: checksums on read, paths kept inside, schema versions, errors that name the file."""

from __future__ import annotations

import json
import os

import pytest
import torch

from workbench.capture.capture import capture
from workbench.core.errors import ArtifactError, ChecksumError, UnknownNameError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native
from workbench.capture.store import ActivationStore, safe_child, weights_sha256

CFG = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=12, n_ctx=8, act_fn="gelu",
           normalization_type="LN", seed=0)
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture
def store(tmp_path) -> ActivationStore:
    lin = Lineage.from_models({"base": boot_native(CFG)})
    x = Inputs.from_sequences([[1, 2, 3]] * 10, [[4, 5]] * 10, "t")
    return capture(lin, x, [HOOK], positions="last", out_dir=tmp_path / "acts", shard_rows=4, progress=False)


def edit_manifest(store: ActivationStore, change) -> None:
    path = store.directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_manifest_records_what_a_reader_needs(store):
    m = store.manifest
    assert m["kind"] == "activations" and m["store_schema_version"] == 1
    assert m["models"]["base"]["weights_sha256"] == weights_sha256(boot_native(CFG).state_dict())
    assert m["hooks"] == [HOOK] and m["positions"] == "last" and m["row_shapes"] == {HOOK: [8]}
    assert m["compute_dtype"] == "float32" and m["storage_dtype"] == "float32"
    assert [s["rows"] for s in m["shards"]] == [[0, 4], [4, 8], [8, 10]]
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in m["shards"])
    assert m["inputs"]["file"] == "inputs.safetensors" and "torch" in m["versions"]
    text = (store.directory / "manifest.json").read_text()
    assert str(store.directory) not in text  # no absolute paths


def test_corrupted_shard_raises_checksum_error_naming_the_file(store):
    shard = store.directory / store.manifest["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    fresh = ActivationStore.open(store.directory)
    fresh.read("base", HOOK, rows=slice(0, 4))  # another shard: fine
    with pytest.raises(ChecksumError, match="00001.safetensors"):
        fresh.read("base", HOOK, rows=slice(3, 6))
    with pytest.raises(ChecksumError):
        ActivationStore.open(store.directory).verify_all()


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "shards/../../x.safetensors"])
def test_manifest_path_outside_the_directory_is_refused(store, bad):
    edit_manifest(store, lambda m: m["shards"][0].update(path=bad))
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        ActivationStore.open(store.directory)


def test_symlink_leading_out_is_refused(store, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"")
    link = store.directory / "shards" / "link.safetensors"
    os.symlink(outside, link)
    with pytest.raises(ArtifactError, match="resolves outside"):
        safe_child(store.directory, "shards/link.safetensors")


def test_unknown_schema_version_and_foreign_kind_are_clear_errors(store, tmp_path):
    edit_manifest(store, lambda m: m.update(store_schema_version=99))
    with pytest.raises(ArtifactError, match="schema version 99"):
        ActivationStore.open(store.directory)
    edit_manifest(store, lambda m: m.update(kind="report"))
    with pytest.raises(ArtifactError, match="not an activation artifact"):
        ActivationStore.open(store.directory)
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        ActivationStore.open(tmp_path / "nothing")


def test_reads_name_unknown_models_and_hooks(store):
    with pytest.raises(UnknownNameError, match="base"):
        store.read("bsae", HOOK)
    with pytest.raises(UnknownNameError, match=HOOK):
        store.read("base", "blocks.0.hook_resid_pots")
    assert store.shape("base", "blocks.0.hook_out") == (10, 8)
    assert torch.equal(torch.cat([t for _, t in store.iter_rows("base", HOOK, 3)]), store.read("base", HOOK))


def test_weights_sha256_hashes_the_raw_bytes():
    """The hash (read through each tensor's buffer, no bytes copy) is sha256 over key, dtype, shape and
    the raw bytes, as written out by hand; bf16 and empty tensors included."""
    import hashlib

    gen = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen).to(torch.bfloat16),
             "e": torch.zeros(0)}
    h = hashlib.sha256()
    for k, t in state.items():
        h.update(f"{k}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    assert weights_sha256(state) == h.hexdigest()
