"""sha256 of files, remembered by (path, size, mtime, inode): a 15 GB checkpoint is read once, not
once per run (or per torchrun rank) that needs to name it.

The cache is one JSON file, `$WORKBENCH_HASH_CACHE` (`off`: no cache), else
`$XDG_CACHE_HOME/workbench/file-sha256.json` (`~/.cache/...`). An entry is used only while the
file's size, modification time (ns) and inode are the ones it was hashed at; a rewritten file is
hashed again. A cache that cannot be read or written is ignored (the hash is then computed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from workbench.core.errors import ArtifactError
from workbench.core.io import atomic_write_bytes, sha256_file

CACHE_ENV = "WORKBENCH_HASH_CACHE"
_MEMO: dict[str, tuple[tuple[int, int, int], str]] = {}  # this process's hashes, whatever the cache file


def cache_file() -> Path | None:
    """Where the cache lives (None: `$WORKBENCH_HASH_CACHE=off`)."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return None if given == "off" else Path(given)
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "workbench" / "file-sha256.json"


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _read_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.is_file():
        return {}
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def files_sha256(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """resolved path -> sha256 of each file, from the cache where its stamp still matches."""
    cache_path = cache_file()
    cache: dict[str, dict] | None = None
    out: dict[str, str] = {}
    changed = False
    for p in paths:
        path = Path(p).resolve()
        key, stamp = str(path), _stamp(path)
        memo = _MEMO.get(key)
        if memo is not None and memo[0] == stamp:
            out[key] = memo[1]
            continue
        if cache is None:
            cache = _read_cache(cache_path)
        entry = cache.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == list(stamp) and isinstance(entry.get("sha256"), str):
            sha = entry["sha256"]
        else:
            sha = sha256_file(path)
            cache[key] = {"stamp": list(stamp), "sha256": sha}
            changed = True
        _MEMO[key] = (stamp, sha)
        out[key] = sha
    if changed and cache_path is not None and cache is not None:
        try:
            atomic_write_bytes(cache_path, json.dumps(cache, sort_keys=True).encode())
        except (OSError, ArtifactError):
            pass  # an unwritable cache only costs the next run a re-read
    return out


__all__ = ["CACHE_ENV", "cache_file", "files_sha256"]
