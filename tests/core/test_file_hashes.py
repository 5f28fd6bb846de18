"""`files_sha256`: a file is read once while its size, mtime and inode stay (the cache file, then
this process's memo), and read again when it is rewritten; an unreadable cache is ignored."""

from __future__ import annotations

import hashlib
import os

import workbench.core.file_hashes as fh


def test_a_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv(fh.CACHE_ENV, str(tmp_path / "cache.json"))
    monkeypatch.setattr(fh, "_MEMO", {})
    reads: list[str] = []
    real = fh.sha256_file
    monkeypatch.setattr(fh, "sha256_file", lambda p: reads.append(str(p)) or real(p))
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"weights")
    key = str(f.resolve())
    assert fh.files_sha256([f]) == {key: hashlib.sha256(b"weights").hexdigest()}
    monkeypatch.setattr(fh, "_MEMO", {})  # a new process: the cache file answers
    assert fh.files_sha256([f])[key] == hashlib.sha256(b"weights").hexdigest() and len(reads) == 1
    f.write_bytes(b"other weights")  # rewritten: size and mtime change
    os.utime(f, ns=(1, 1))
    assert fh.files_sha256([f])[key] == hashlib.sha256(b"other weights").hexdigest() and len(reads) == 2
    (tmp_path / "cache.json").write_text("{not json")
    monkeypatch.setattr(fh, "_MEMO", {})
    assert fh.files_sha256([f])[key] == hashlib.sha256(b"other weights").hexdigest() and len(reads) == 3
    monkeypatch.setenv(fh.CACHE_ENV, "off")
    assert fh.cache_file() is None
