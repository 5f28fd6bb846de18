"""core.io: atomic writes leave no partial file, checksums catch changed bytes, locks exclude writers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from workbench.core import io
from workbench.core.errors import ArtifactError, ChecksumError, LockError


def leftovers(directory: Path) -> list[str]:
    """Temp files an interrupted atomic write could leave beside its target."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_and_returns_its_sha256(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    sha = io.atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert sha == io.sha256_file(target) == io.sha256_bytes(b"hello")
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    io.atomic_write_bytes(target, b"world")
    assert target.read_bytes() == b"world"
    assert leftovers(target.parent) == []


@pytest.mark.parametrize("where, error", [("fsync", OSError("disk full")), ("replace", KeyboardInterrupt())])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where, error):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(io.os, where, fail)
    with pytest.raises(type(error)):
        io.atomic_write_text(target, "new content that never lands")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_an_interrupted_first_write_leaves_no_file_at_all(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError("power cut")

    monkeypatch.setattr(io.os, "fsync", fail)
    with pytest.raises(OSError):
        io.atomic_write_json(tmp_path / "new.json", {"a": 1})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_json_is_canonical_and_round_trips(tmp_path):
    a, b = {"b": 1, "a": [1.5, None]}, {"a": [1.5, None], "b": 1}
    assert io.to_json(a) == io.to_json(b) == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    io.atomic_write_json(tmp_path / "x.json", a)
    assert io.read_json(tmp_path / "x.json") == a


def test_read_json_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ArtifactError, match="Missing file"):
        io.read_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="Corrupt JSON"):
        io.read_json(tmp_path / "bad.json")


def test_tensors_round_trip_with_metadata_and_identical_bytes(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    meta = {"role": "student", "m": 3}
    sha1 = io.save_tensors(tmp_path / "a.safetensors", tensors, meta)
    sha2 = io.save_tensors(tmp_path / "b.safetensors", dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert sha1 == sha2  # the same inputs always give the same bytes
    back = io.load_tensors(tmp_path / "a.safetensors", expected_sha256=sha1)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert io.read_tensor_metadata(tmp_path / "a.safetensors") == meta
    io.save_tensors(tmp_path / "plain.safetensors", tensors)
    assert io.read_tensor_metadata(tmp_path / "plain.safetensors") == {}


def test_checksum_mismatch_raises_checksum_error(tmp_path):
    path = tmp_path / "t.safetensors"
    sha = io.save_tensors(path, {"w": torch.ones(4)})
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        io.load_tensors(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor byte: still a valid file, other content
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        io.load_tensors(path, expected_sha256=sha)
    assert not torch.equal(io.load_tensors(path)["w"], torch.ones(4))  # without a checksum it loads


def test_load_tensors_rejects_missing_and_non_safetensors_files(tmp_path):
    with pytest.raises(ArtifactError, match="Missing tensor file"):
        io.load_tensors(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ArtifactError, match="not a valid safetensors"):
        io.load_tensors(tmp_path / "junk.safetensors")
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        io.read_tensor_metadata(tmp_path / "junk.safetensors")


def test_lock_contention_raises_lock_error_and_release_frees_it(tmp_path):
    lock = tmp_path / "store" / ".lock"
    with io.exclusive_lock(lock) as held:
        assert held == lock and lock.exists()
        with pytest.raises(LockError, match="Another process is writing"):
            with io.exclusive_lock(lock):
                pass
    with io.exclusive_lock(lock):  # released on exit: a later writer gets it
        pass


def test_lock_is_released_when_the_holder_raises(tmp_path):
    lock = tmp_path / ".lock"
    with pytest.raises(RuntimeError):
        with io.exclusive_lock(lock):
            raise RuntimeError("writer crashed")
    with io.exclusive_lock(lock):
        pass
    assert os.path.exists(lock)
