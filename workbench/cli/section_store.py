"""Report sections saved as they finish, and reused by a rerun computed from the same things.

The main job saves each section's result into `<out>/sections/<name>/` (the layout
`write_report` uses) as soon as the section completes, then writes `section_key.json` beside it:
the *key* of what the section was computed from (section name, the job's inputs, every model's
weights, the config fields the section reads, the trait, package versions) and the result's
class. A rerun whose key is the same loads the result instead of recomputing it; any difference
recomputes and overwrites. The key file is removed before a result is rewritten and written
after it, so a crash at any point leaves either a complete, keyed section or none: a job killed
mid-run loses only the section it was computing.

>>> fingerprint({"hooks": ("hook_embed",), "rows": 150})
{'hooks': ['hook_embed'], 'rows': 150}
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from workbench.core.errors import ArtifactError, WorkbenchError
from workbench.core.io import atomic_write_json, read_json, sha256_bytes, to_json
from workbench.core.provenance import package_versions, source_hash
from workbench.results.base import Result

KEY_FILE = "section_key.json"
KEY_SCHEMA = 1


def fingerprint(value: Any) -> Any:
    """A JSON-able, canonical stand-in for a config value: dataclasses become dicts of their fields,
    tensors their dtype, shape and sha256, paths and devices strings, tuples lists (recursively)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"tensor": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "sha256": sha256_bytes(raw)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: fingerprint(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"Cannot fingerprint a {type(value).__name__} for a section key; add a case to fingerprint().")


def section_key(name: str, *, inputs_hash: str, models: Mapping[str, Any], reads: Mapping[str, Any]) -> dict[str, Any]:
    """What a section is computed from: its name, the inputs' content hash, the models (role,
    parent, weights sha256), the config fields it reads (fingerprinted), package versions and the
    workbench's source (so an edited checkout recomputes)."""
    return {"schema": KEY_SCHEMA, "section": name, "inputs": inputs_hash, "models": fingerprint(models),
            "reads": fingerprint(reads), "versions": package_versions(), "source": source_hash()}


def key_digest(key: Mapping[str, Any]) -> str:
    return sha256_bytes(to_json(key).encode())


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Top-level (and `reads.<field>`) entries that differ between two keys."""
    out = []
    for k in sorted(set(old) | set(new)):
        if k == "reads" and isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            out += [f"reads.{f}" for f in sorted(set(old[k]) | set(new[k])) if old[k].get(f) != new[k].get(f)]
        elif old.get(k) != new.get(k):
            out.append(k)
    return out


def _result_class(spec: str) -> type:
    """The result class a key file names (`module:QualName`), imported only from the workbench."""
    module, _, qualname = spec.partition(":")
    if not module.startswith("workbench.") or not qualname:
        raise ValueError(f"result class {spec!r} is not a workbench class")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if not isinstance(cls, type) or not callable(getattr(cls, "load", None)):
        raise ValueError(f"{spec} is not a result class")
    return cls


class SectionStore:
    """Saved section results under `root` (`<out>/sections`), one directory per section name."""

    def __init__(self, root: str | os.PathLike, log: Callable[[str], None] = lambda s: None) -> None:
        self.root = Path(root)
        self.log = log

    def directory(self, name: str) -> Path:
        return self.root / name

    def load(self, name: str, key: Mapping[str, Any]) -> Result | None:
        """The saved result of `name` when its key file matches `key` and it loads; else None
        (logging why a saved section is not reused)."""
        path = self.directory(name) / KEY_FILE
        if not path.is_file():
            return None
        try:
            saved = read_json(path)
            if saved.get("digest") != key_digest(key):
                changed = _changed(saved.get("key") or {}, dict(key))
                self.log(f"section {name}: recomputing (saved one was computed from other {', '.join(changed) or 'inputs'})")
                return None
            cls = _result_class(saved["result_class"])
            result = cls.load(self.directory(name))
        except (WorkbenchError, KeyError, ValueError, AttributeError, ImportError, TypeError) as e:
            self.log(f"section {name}: recomputing (saved one cannot be read: {e})")
            return None
        if getattr(result, "kind", None) != saved.get("kind"):
            self.log(f"section {name}: recomputing (saved one is a {getattr(result, 'kind', '?')!r} result, "
                     f"its key says {saved.get('kind')!r})")
            return None
        self.log(f"section {name}: reused (saved {self.directory(name)})")
        return result

    def save(self, name: str, result: Result, key: Mapping[str, Any]) -> Path:
        """Save `result` and then its key (the old key first removed: a crash in between leaves no key).
        A sections folder or section folder that is a symlink is refused: nothing is written or
        deleted through one (it could lead out of the job's output)."""
        directory = self.directory(name)
        for path in (self.root, directory):
            if path.is_symlink():
                raise ArtifactError(f"{path} is a symlink (to {path.resolve()}); the workbench does not write or delete "
                                    "through symlinks. Remove the link, or pass --out a real directory.")
        (directory / KEY_FILE).unlink(missing_ok=True)
        path = result.save(directory)
        cls = type(result)
        atomic_write_json(directory / KEY_FILE, {
            "digest": key_digest(key), "key": dict(key), "kind": result.kind,
            "result_class": f"{cls.__module__}:{cls.__qualname__}", "result": path.name})
        return path


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, None when it does not exist (keys name what a section reads)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
