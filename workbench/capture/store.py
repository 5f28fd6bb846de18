"""Activation artifacts: a directory other tools can read, that a crash never leaves half-written.

Layout of an artifact directory::

    manifest.json                                  written last: its presence means "complete"
    inputs.safetensors                             the Inputs (token ids, masks, prompt lengths)
    shards/{model}/{hook}/{index:05d}.safetensors  one tensor "activations": rows [start, stop)
    .lock                                          flock of the writer (empty)

The manifest records the schema version, every model's role, parent and weight hash (sha256
over its clean state dict in key order), the hooks (classic TransformerLens names) with every
alias of each, compute and storage dtype, per-row shapes, the position rule, the Inputs' content
hash and file, every shard with its rows, size and sha256, and package versions; no timestamps,
no absolute paths, so two runs of one capture are byte-identical.

Every file goes through `workbench.core.io` (atomic temp + rename). Each shard's safetensors metadata
names the hash of the capture *plan* (the manifest without the shard list), so a capture killed
at any point and started again keeps the shards of the same plan and writes the missing ones.

Reads are lazy: `ActivationStore.read(model, hook, rows)` opens only the shards that hold those
rows of that hook, verifies each one's sha256 the first time it is touched, and slices it with
`safetensors.safe_open`. Paths in a manifest must stay inside the directory. No pickle anywhere.

>>> import tempfile
>>> from workbench.capture.capture import capture
>>> from workbench.core.examples import tiny_inputs, tiny_lineage
>>> lin, inputs = tiny_lineage(("base", "student")), tiny_inputs()
>>> out = tempfile.TemporaryDirectory()
>>> _ = capture(lin, inputs, ["blocks.0.hook_resid_post"], positions="all", out_dir=out.name, progress=False)
>>> store = ActivationStore.open(out.name)
>>> store.models, store.hooks
(['base', 'student'], ['blocks.0.hook_resid_post'])
>>> store.read("student", "blocks.0.hook_resid_post", rows=slice(0, 1)).shape   # [rows, pos, d_model]
torch.Size([1, 3, 8])
>>> out.cleanup()
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from workbench.core.errors import ArtifactError, ChecksumError, ConfigError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.io import (
    atomic_write_json,
    exclusive_lock,
    read_json,
    read_tensor_metadata,
    save_tensors,
    sha256_bytes,
    sha256_file,
    to_json,
)
from workbench.core.errors import SchemaError
from workbench.core.schemas import ActivationManifest, check_version, validate

STORE_KIND = "activations"
STORE_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
INPUTS_FILE = "inputs.safetensors"
SHARD_DIR = "shards"
LOCK_FILE = ".lock"
TENSOR_KEY = "activations"

STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32 (the spelling manifests use)."""
    return str(dtype).removeprefix("torch.")


def storage_dtype_of(dtype: str | torch.dtype) -> torch.dtype:
    """Parse a storage dtype (float32, bfloat16 or float16; a string or a torch dtype)."""
    name = dtype_name(dtype) if isinstance(dtype, torch.dtype) else str(dtype)
    if name not in STORAGE_DTYPES:
        raise unknown_name("storage dtype", name, STORAGE_DTYPES, fix="Store activations as float32, bfloat16 or float16.")
    return STORAGE_DTYPES[name]


def check_path_name(kind: str, name: str) -> str:
    """A model or hook name becomes a directory name: refuse anything that could escape or hide."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"{kind} name {name!r} cannot be used as a directory name in an artifact. Use letters, digits, "
            "'_', '-' and '.' (not starting with '.', no '..')."
        )
    return name


def weights_sha256(state: dict[str, Tensor]) -> str:
    """sha256 over a clean state dict in key order: each key, dtype, shape and raw bytes (one key
    on the CPU at a time, never copied again to bytes)."""
    import hashlib

    h = hashlib.sha256()
    for key, t in state.items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{dtype_name(t.dtype)}|{tuple(t.shape)}|".encode())
        if t.numel():  # hashed through the buffer: no bytes copy of the tensor (an embedding is 1 GB at 7B)
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def plan_hash(plan: dict[str, Any]) -> str:
    return sha256_bytes(to_json(plan).encode())[:32]


@dataclass(frozen=True)
class ShardSpec:
    """Rows [start, stop) of one hook of one model."""

    model: str
    hook: str
    index: int
    start: int
    stop: int

    @property
    def path(self) -> str:
        """Path relative to the artifact directory (POSIX separators)."""
        return f"{SHARD_DIR}/{self.model}/{self.hook}/{self.index:05d}.safetensors"


def safe_child(directory: Path, rel: str) -> Path:
    """`directory / rel`, refused unless it is a relative path that stays inside `directory`."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise ArtifactError(
            f"The manifest of {directory} names the path {rel!r}, which points outside the artifact directory. "
            "The artifact is corrupt or foreign; do not use it (re-capture into a fresh directory)."
        )
    path = directory / pure
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError as e:  # a symlink inside the directory that leads out of it
        raise ArtifactError(
            f"{rel!r} in {directory} resolves outside the artifact directory ({path.resolve()}). "
            "Refusing to read it; re-capture into a fresh directory."
        ) from e
    return path


# --------------------------------------------------------------------------- writing


def save_inputs(path: Path, inputs: Inputs) -> str:
    """Write the Inputs (ids, masks, prompt lengths; labels in the metadata). Returns sha256."""
    cpu = inputs.to("cpu")
    meta = {
        "sources": list(cpu.sources),
        "prompt_ids": list(cpu.prompt_ids),
        "seeds": None if cpu.seeds is None else list(cpu.seeds),
        "pad_id": int(cpu.pad_id),
    }
    tensors = {
        "tokens": cpu.tokens.to(torch.int64),
        "mask": cpu.mask.to(torch.uint8),
        "attention_mask": cpu.attention_mask.to(torch.uint8),
        "prompt_lengths": cpu.prompt_lengths.to(torch.int64),
    }
    return save_tensors(path, tensors, meta)


def load_inputs(path: Path, expected_sha256: str | None) -> Inputs:
    from workbench.core.io import load_tensors

    t = load_tensors(path, expected_sha256=expected_sha256)
    meta = read_tensor_metadata(path)
    return Inputs(
        tokens=t["tokens"],
        mask=t["mask"].bool(),
        attention_mask=t["attention_mask"].bool(),
        prompt_lengths=t["prompt_lengths"],
        sources=list(meta["sources"]),
        prompt_ids=[int(i) for i in meta["prompt_ids"]],
        seeds=meta.get("seeds"),
        pad_id=int(meta.get("pad_id", 0)),
    )


class StoreWriter:
    """Writes one artifact under its lock; resumable. Use as a context manager.

    `plan` is the manifest without the shard list. Shards of the same plan already on disk are
    kept (`has`); a complete artifact of another plan is refused unless `overwrite=True`.
    """

    def __init__(self, directory: str | os.PathLike, plan: dict[str, Any], overwrite: bool = False):
        self.directory = Path(directory)
        self.plan = plan
        self.plan_hash = plan_hash(plan)
        self.overwrite = overwrite
        self._lock: contextlib.AbstractContextManager | None = None
        self.shards: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> StoreWriter:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive_lock(self.directory / LOCK_FILE)
        self._lock.__enter__()
        try:
            self._prepare()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lock is not None
        self._lock.__exit__(*exc)

    def _prepare(self) -> None:
        # temp files of a writer killed mid-write (mkstemp leaves them behind on SIGKILL)
        for tmp in self.directory.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        manifest = self.directory / MANIFEST
        if manifest.exists():
            old = read_json(manifest)
            same = old.get("plan_hash") == self.plan_hash
            if not same and not self.overwrite:
                raise ArtifactError(
                    f"{self.directory} already holds a different activation capture (plan {old.get('plan_hash')!r}, "
                    f"this one {self.plan_hash!r}). Pass overwrite=True to replace it, or choose another out_dir."
                )
            if not same:
                manifest.unlink()
                shutil.rmtree(self.directory / SHARD_DIR, ignore_errors=True)

    @property
    def complete(self) -> bool:
        """True when a finished artifact of this very plan is already here."""
        path = self.directory / MANIFEST
        return path.exists() and read_json(path).get("plan_hash") == self.plan_hash

    def has(self, spec: ShardSpec) -> bool:
        """A shard of this plan (same rows, hook, model) is already on disk: keep it."""
        path = self.directory / spec.path
        if not path.exists():
            return False
        try:
            meta = read_tensor_metadata(path)
        except ArtifactError:
            return False
        return meta.get("plan") == self.plan_hash and meta.get("rows") == [spec.start, spec.stop]

    def write_shard(self, spec: ShardSpec, tensor: Tensor) -> None:
        meta = {"plan": self.plan_hash, "model": spec.model, "hook": spec.hook, "rows": [spec.start, spec.stop]}
        save_tensors(self.directory / spec.path, {TENSOR_KEY: tensor}, meta)

    def write_inputs(self, inputs: Inputs) -> str:
        """Write the Inputs (deterministic bytes, so rewriting on resume changes nothing)."""
        return save_inputs(self.directory / INPUTS_FILE, inputs)

    def finish(self, specs: list[ShardSpec], inputs_sha256: str) -> dict[str, Any]:
        """Write the manifest (last): every shard with its size and sha256.

        Shard files of another plan left by an interrupted capture are removed first."""
        wanted = {spec.path for spec in specs}
        for path in sorted((self.directory / SHARD_DIR).rglob("*.safetensors")):
            if path.relative_to(self.directory).as_posix() not in wanted:
                path.unlink()
        shards = []
        for spec in specs:
            path = self.directory / spec.path
            shards.append({
                "path": spec.path, "model": spec.model, "hook": spec.hook, "index": spec.index,
                "rows": [spec.start, spec.stop], "bytes": path.stat().st_size, "sha256": sha256_file(path),
            })
        manifest = {
            **self.plan,
            "plan_hash": self.plan_hash,
            "inputs": {**self.plan["inputs"], "file": INPUTS_FILE, "sha256": inputs_sha256},
            "shards": shards,
            "total_bytes": sum(s["bytes"] for s in shards),
        }
        atomic_write_json(self.directory / MANIFEST, manifest)
        return manifest


# --------------------------------------------------------------------------- reading


class ActivationStore:
    """A finished activation artifact, read lazily (one model, one hook, a row range at a time).

    Tensors come back as [rows, d...] for positions "last" / "mean", [rows, pos, d...] for
    "all" (pad positions are zero; `inputs.attention_mask` says which are real) and
    [rows, k, d...] for explicit position lists.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], verify: bool = True):
        self.directory = directory
        self.manifest = manifest
        self.verify = verify
        self._verified: set[str] = set()
        self._inputs: Inputs | None = None
        self._alias: dict[str, str] = {}
        for hook, names in manifest["hook_aliases"].items():
            for name in names:
                self._alias[name] = hook
        self._shards: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in manifest["shards"]:
            self._shards.setdefault((s["model"], s["hook"]), []).append(s)
        for key in self._shards:
            self._shards[key].sort(key=lambda s: s["rows"][0])
        for s in manifest["shards"]:
            safe_child(directory, s["path"])  # refuse the whole artifact at open, not mid-analysis
        safe_child(directory, manifest["inputs"]["file"])

    @classmethod
    def open(cls, directory: str | os.PathLike, verify: bool = True) -> ActivationStore:
        """Open a finished artifact. `verify`: check each file's sha256 the first time it is read."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.exists():
            hint = " A capture into it was interrupted: run the same capture again to finish it." if (directory / SHARD_DIR).exists() else ""
            raise ArtifactError(f"No activation artifact in {directory}: {MANIFEST} is missing.{hint}")
        manifest = read_json(path)
        if not isinstance(manifest, dict) or manifest.get("kind") != STORE_KIND:
            raise ArtifactError(f"{path} is not an activation artifact (kind {manifest.get('kind') if isinstance(manifest, dict) else None!r}).")
        check_version(manifest, str(path), STORE_SCHEMA_VERSION, key="store_schema_version", what="activation-store schema")
        validate(ActivationManifest, manifest, str(path), fix="The artifact is corrupt: delete it and capture again.")
        if manifest["storage_dtype"] not in STORAGE_DTYPES:
            raise SchemaError(f"{path}: field storage_dtype = {manifest['storage_dtype']!r} is not one of "
                              f"{sorted(STORAGE_DTYPES)}. The artifact is corrupt: delete it and capture again.")
        return cls(directory, manifest, verify=verify)

    # ---- what is in it

    @property
    def models(self) -> list[str]:
        """Model names, in capture order."""
        return list(self.manifest["model_order"])

    @property
    def hooks(self) -> list[str]:
        """Hook names (classic vocabulary), in the order they were asked for."""
        return list(self.manifest["hooks"])

    @property
    def positions(self) -> str | list[int]:
        """The position rule: "all", "last", "mean" or a list of position indices."""
        return self.manifest["positions"]

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return (f"ActivationStore({self.directory}, models={self.models}, hooks={len(self.hooks)}, "
                f"rows={self.n_rows}, positions={self.positions!r})")

    def model_info(self, model: str) -> dict[str, Any]:
        """role, parent and weights_sha256 of one captured model."""
        return dict(self.manifest["models"][self._model(model)])

    def parent_of(self, model: str) -> str | None:
        return self.model_info(model).get("parent")

    def hook_name(self, hook: str) -> str:
        """The stored (classic) name of a hook or any alias of it."""
        if hook not in self._alias:
            raise unknown_name("hook", hook, self._alias, fix=f"Hooks stored in {self.directory}: {', '.join(self.hooks)}.")
        return self._alias[hook]

    def shape(self, model: str, hook: str) -> tuple[int, ...]:
        """Full shape of one model's activations at one hook: (n_rows, *row_shape)."""
        self._model(model)
        return (self.n_rows, *self.manifest["row_shapes"][self.hook_name(hook)])

    @property
    def storage_dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.manifest["storage_dtype"]]

    @property
    def inputs(self) -> Inputs:
        """The Inputs that were captured (token ids stored in the artifact; checksum verified)."""
        if self._inputs is None:
            info = self.manifest["inputs"]
            path = safe_child(self.directory, info["file"])
            self._inputs = load_inputs(path, info["sha256"] if self.verify else None)
        return self._inputs

    def _model(self, model: str) -> str:
        if model not in self.manifest["models"]:
            raise unknown_name("model", model, self.manifest["models"], fix=f"Models stored in {self.directory}.")
        return model

    # ---- reading tensors

    def _check(self, shard: dict[str, Any]) -> Path:
        path = safe_child(self.directory, shard["path"])
        if not path.exists():
            raise ArtifactError(f"Shard {path} listed in {self.directory / MANIFEST} is missing. Re-capture into a fresh directory.")
        if self.verify and shard["path"] not in self._verified:
            got = sha256_file(path)
            if got != shard["sha256"]:
                raise ChecksumError(
                    f"Checksum mismatch for {path}: the manifest says sha256 {shard['sha256'][:12]}..., the file has "
                    f"{got[:12]}.... The shard is corrupt or was changed; delete the artifact and capture again."
                )
            self._verified.add(shard["path"])
        return path

    def read(self, model: str, hook: str, rows: slice | range | None = None, *,
             device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Tensor:
        """Activations of `model` at `hook` for a contiguous row range (default: all rows).

        Reads only the shards that overlap the range, and only those rows of them.
        """
        hook = self.hook_name(hook)
        if isinstance(rows, range):
            rows = slice(rows.start, rows.stop, rows.step)
        start, stop, step = (rows if rows is not None else slice(None)).indices(self.n_rows)
        if step != 1:
            raise ConfigError(f"rows must be a contiguous range (step 1); got step {step}. Read a range and index it.")
        pieces = []
        for shard in self._shards.get((self._model(model), hook), []):
            lo, hi = shard["rows"]
            a, b = max(lo, start), min(hi, stop)
            if a >= b:
                continue
            path = self._check(shard)
            with safe_open(str(path), framework="pt") as f:
                pieces.append(f.get_slice(TENSOR_KEY)[a - lo:b - lo])
        if not pieces:
            out = torch.empty((max(stop - start, 0), *self.manifest["row_shapes"][hook]), dtype=self.storage_dtype)
        else:
            out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return out.to(device=device, dtype=dtype or out.dtype)

    def iter_rows(self, model: str, hook: str, batch_rows: int = 4096) -> Iterator[tuple[int, Tensor]]:
        """(start, activations) for consecutive row blocks: stream a hook without loading it whole."""
        for start in range(0, self.n_rows, batch_rows):
            yield start, self.read(model, hook, slice(start, start + batch_rows))

    def verify_all(self) -> None:
        """Check every file's sha256 now (raises ChecksumError naming the first bad file)."""
        for shard in self.manifest["shards"]:
            self._check(shard)
        self._inputs = None
        _ = self.inputs
