"""The one place that writes files: atomic (temp file + rename), checksummed, lockable.

Every writer in the workbench (organism, store, report, bench) goes through here, so a crash
never leaves a half-written file: readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from workbench.core.errors import ArtifactError, ChecksumError, LockError

TENSOR_METADATA_KEY = "workbench"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` to `path` atomically (temp in the same dir, fsync, rename). Returns sha256."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; artifacts are for other tools to read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, ArtifactError):
            raise write_error(path, e) from e
        raise
    return sha256_bytes(data)


_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full: free space or choose another --out",
    errno.EDQUOT: "the disk quota is exceeded: free space or choose another --out",
    errno.EACCES: "the folder is not writable: fix its permissions or choose another --out",
    errno.EPERM: "the folder is not writable: fix its permissions or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path or choose another --out",
    errno.EEXIST: "a file is where a folder should be: fix the path or choose another --out",
    errno.EISDIR: "a folder is where the file should be: remove it or choose another --out",
}


def write_error(path: str | os.PathLike, error: OSError, action: str = "write") -> ArtifactError:
    """An ArtifactError naming the path a write failed on and the fix (full disk, read-only folder,
    a file where a folder should be); a failed atomic write leaves the previous file as it was."""
    fix = _WRITE_FIXES.get(error.errno or 0, "check the path and the disk, or choose another --out")
    return ArtifactError(f"Cannot {action} {path}: {error.strerror or error} ({fix}). Anything already there is left "
                         "unchanged.")


def ensure_dir(directory: str | os.PathLike) -> Path:
    """Create `directory` (and parents); an ArtifactError naming it when that is impossible
    (read-only, full disk, a file in the way)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(directory, e, "create directory") from e
    return directory


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, 2-space indent, trailing newline (reruns compare byte for byte)."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> str:
    return atomic_write_text(path, to_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ArtifactError(f"Missing file {path}. Was it written by the workbench?") from e
    except IsADirectoryError as e:
        raise ArtifactError(f"{path} is a directory, not a JSON file. Fix the path.") from e
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path} is not valid UTF-8 (byte offset {e.start}): it is corrupt or not a workbench "
                            "file. Delete it and rerun the step that wrote it.") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"Corrupt JSON in {path}: {str(e)[:200]}. Delete it and rerun the step that wrote it.") from None


def save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None
) -> str:
    """Write tensors as safetensors, atomically. Returns the file's sha256.

    safetensors writes a multi-key metadata map in random order, so `metadata` is stored as one
    key, `workbench`, holding sorted JSON: the same inputs always give the same bytes.
    """
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {TENSOR_METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)} if metadata else None
    return atomic_write_bytes(path, _st_save(payload, metadata=meta))


def read_tensor_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict `save_tensors` stored in a safetensors file ({} when there is none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(TENSOR_METADATA_KEY)
    except Exception as e:
        raise ArtifactError(f"{path} is not a readable safetensors file ({e}). Delete it and rebuild.") from e
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} has corrupt workbench metadata ({e}). Delete it and rebuild.") from e
    return meta if isinstance(meta, dict) else {}


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never pickle); verify its sha256 when one is given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ArtifactError(f"Missing tensor file {path}. Rebuild the artifact that should hold it.") from e
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise ChecksumError(
            f"Checksum mismatch for {path}: expected sha256 {expected_sha256[:12]}..., got "
            f"{sha256_bytes(data)[:12]}.... The file is corrupt or was changed; delete it and rebuild."
        )
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{path} is not a valid safetensors file ({e}). Delete it and rebuild.") from e
    return {k: v.to(device) for k, v in tensors.items()}


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold `path` (a lock file) exclusively; a second writer gets LockError at once.

    Uses an OS-level advisory lock (flock), so a writer killed with -9 releases it automatically.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise LockError(
                f"Another process is writing {path.parent} (lock {path.name} is held). "
                "Wait for it to finish, or write to another directory."
            ) from e
        yield path
    finally:
        os.close(fd)
