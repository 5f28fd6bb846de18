"""Package versions and config hashes: what manifests record so caches and reruns are honest."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_PACKAGES = ("workbench", "torch", "transformer-lens", "transformers", "numpy", "scikit-learn", "safetensors")


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the results depend on."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def source_hash(length: int = 16) -> str:
    """Hash of the workbench's own source files: a cache keyed by it is not reused by other code
    under the same version number (a developer's checkout)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:length]


def as_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def config_hash(config: Any, *, include_versions: bool = True, length: int = 16) -> str:
    """Stable hash of a config (dataclass or dict), keyed by package versions unless told not to."""
    payload: dict[str, Any] = {"config": as_dict(config)}
    if include_versions:
        payload["versions"] = package_versions()
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
