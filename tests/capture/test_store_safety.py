"""The store never deletes what it did not write, never writes through a symlink, never returns
uninitialised memory, and re-captures a damaged shard on resume (issue 16)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from workbench.capture import store as store_mod
from workbench.capture.capture import capture
from workbench.capture.store import ActivationStore
from workbench.core.errors import ArtifactError, NumericsError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native

CFG = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, d_vocab=12, n_ctx=8, act_fn="gelu",
           normalization_type="LN", seed=0)
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def lin() -> Lineage:
    return Lineage.from_models({"base": boot_native(CFG), "student": boot_native({**CFG, "seed": 1})})


def rows() -> Inputs:
    return Inputs.from_sequences([[1, 2, 3]] * 10, [[4, 5]] * 10, "t")


def run(lin: Lineage, out, **kw) -> ActivationStore:
    return capture(lin, rows(), [HOOK], positions="last", out_dir=out, shard_rows=4, progress=False, **kw)


def sentinel(directory) -> tuple:
    """Files shaped like shards in someone else's storage (one at a path a capture would use)."""
    paths = [directory / "unrelated.safetensors", directory / "base" / HOOK / "00007.safetensors"]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        save_file({"x": torch.ones(2)}, str(p))
    return tuple((p, p.read_bytes()) for p in paths)


def assert_untouched(files: tuple) -> None:
    for path, data in files:
        assert path.is_file() and path.read_bytes() == data, path


def test_symlinked_shards_folder_is_refused_and_nothing_outside_is_deleted(lin, tmp_path):
    elsewhere = tmp_path / "other_storage"
    files = sentinel(elsewhere)
    art = tmp_path / "acts"
    art.mkdir()
    os.symlink(elsewhere, art / "shards")
    with pytest.raises(ArtifactError, match=r"is a symlink \(to .*refuses this artifact before writing"):
        run(lin, art)
    assert_untouched(files)
    assert sorted(p.name for p in elsewhere.rglob("*")) == sorted(["unrelated.safetensors", "base", HOOK, "00007.safetensors"])


def test_symlinked_model_folder_inside_shards_is_refused(lin, tmp_path):
    elsewhere = tmp_path / "other_storage"
    files = sentinel(elsewhere / "base")
    art = tmp_path / "acts"
    (art / "shards").mkdir(parents=True)
    os.symlink(elsewhere / "base", art / "shards" / "base")
    with pytest.raises(ArtifactError, match=r"is a symlink \(to .*refuses this artifact before writing"):
        run(lin, art)
    assert_untouched(files)
    assert len([p for p in elsewhere.rglob("*") if p.is_file()]) == 2  # nothing written through the link


def test_symlinked_artifact_root_is_refused_naming_the_real_path(lin, tmp_path):
    real = tmp_path / "real"
    files = sentinel(real / "shards")
    link = tmp_path / "link"
    os.symlink(real, link)
    with pytest.raises(ArtifactError, match="is a symlink.*pass the real directory"):
        run(lin, link)
    assert_untouched(files)
    assert not (real / "manifest.json").exists() and not (real / ".lock").exists()


def test_foreign_files_in_a_real_artifact_are_kept(lin, tmp_path):
    art = tmp_path / "acts"
    files = sentinel(art / "shards")
    run(lin, art)
    assert_untouched(files)  # not listed in the manifest, but not ours to delete either


def test_stale_shards_of_an_interrupted_other_plan_are_removed(lin, tmp_path, monkeypatch):
    art = tmp_path / "acts"

    def interrupted(self, specs, sha):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store_mod.StoreWriter, "finish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            capture(lin, rows(), [HOOK], positions="last", out_dir=art, shard_rows=3, progress=False)
    assert (art / "shards/base" / HOOK / "00003.safetensors").exists()  # 10 rows by 3: four shards
    s = run(lin, art)  # another plan (shards of 4 rows): three shards, the fourth is ours and stale
    assert not (art / "shards/base" / HOOK / "00003.safetensors").exists()
    assert not (art / store_mod.LEDGER).exists()
    s.verify_all()


def test_model_listed_without_shards_is_an_error_not_uninitialised_memory(lin, tmp_path):
    s = run(lin, tmp_path / "acts")
    path = s.directory / "manifest.json"
    m = json.loads(path.read_text())
    m["shards"] = [x for x in m["shards"] if x["model"] != "student"]
    path.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"model 'student'.*(cover rows \[0, 0\)|no shard for rows 0)"):
        ActivationStore.open(s.directory)  # the manifest's schema (or the coverage check behind it) refuses it
    s.manifest["shards"] = m["shards"]  # a store opened before the edit
    with pytest.raises(ArtifactError, match="student"):
        s.verify_all()
    del s._shards[("student", HOOK)]
    with pytest.raises(ArtifactError, match="No shard"):
        s.read("student", HOOK)


def test_damaged_shard_from_an_interrupted_capture_is_captured_again(lin, tmp_path, monkeypatch):
    clean = run(lin, tmp_path / "clean")
    art = tmp_path / "acts"
    with monkeypatch.context() as m:
        m.setattr(store_mod.StoreWriter, "finish", lambda self, specs, sha: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            run(lin, art)
    shard = art / "shards/student" / HOOK / "00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-4:] = torch.tensor([float("nan")]).numpy().tobytes()  # a NaN in the payload, header intact
    shard.write_bytes(bytes(data))
    resumed = run(lin, art)
    assert resumed.manifest["shards"] == clean.manifest["shards"]
    resumed.verify_all()
    assert torch.equal(resumed.read("student", HOOK), clean.read("student", HOOK))


def test_nan_in_stored_activations_is_a_numerics_error_naming_model_and_hook(lin, tmp_path):
    s = run(lin, tmp_path / "acts")
    entry = next(x for x in s.manifest["shards"] if x["model"] == "student" and x["index"] == 1)
    shard = s.directory / entry["path"]
    save_file({"activations": torch.full((4, 8), float("nan"))}, str(shard))
    fresh = ActivationStore.open(s.directory, verify=False)  # checksum deliberately bypassed
    fresh.read("student", HOOK, rows=slice(0, 4))
    with pytest.raises(NumericsError, match="'student' at hook 'blocks.0.hook_resid_post'.*row 4"):
        fresh.read("student", HOOK)
