"""Activation artifacts: a directory other tools can read, that a crash never leaves half-written.

Layout of an artifact directory::

    manifest.json                                  written last: its presence means "complete"
    inputs.safetensors                             the Inputs (token ids, masks, prompt lengths)
    shards/{model}/{hook}/{index:05d}.safetensors  one tensor "activations": rows [start, stop)
    .lock                                          flock of the writer (empty)
    .written.jsonl                                 while writing: every file this writer wrote, with its sha256
    .written.rank{R}.jsonl                         the same for rank R > 0 of a torchrun capture

The manifest records the schema version, every model's role, parent and weight hash (sha256
over its clean state dict in key order), the hooks (classic TransformerLens names) with every
alias of each, compute and storage dtype, per-row shapes, the position rule, the Inputs' content
hash and file, every shard with its rows, size and sha256, and package versions; no timestamps,
no absolute paths, so two runs of one capture are byte-identical.

Every file goes through `workbench.core.io` (atomic temp + rename). Each shard's safetensors metadata
names the hash of the capture *plan* (the manifest without the shard list), and the writer appends
each shard it wrote, with its sha256, to a ledger (`.written.jsonl`), so a capture killed at any
point and started again keeps only the shards of the same plan whose *content* still matches the
ledger, and writes the rest. A writer deletes only files its ledger (or the manifest it replaces)
lists, never follows a symlink, and refuses an artifact whose root or folders are symlinks or
resolve outside it before it writes anything.

Under `torchrun` the rank-0 writer holds the lock and does everything a one-process writer does;
the other ranks write their own shards through a `RankWriter` (no lock, its own ledger
`.written.rank{R}.jsonl`). Every writer trusts a shard that *any* ledger vouches for, so a capture
killed at N processes resumes at any number of them.

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
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from workbench.core.errors import ArtifactError, ChecksumError, ConfigError, NumericsError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.io import (
    atomic_write_bytes,
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
LEDGER = ".written.jsonl"
_RANK_LEDGER = re.compile(r"^\.written\.rank\d+\.jsonl$")
TENSOR_KEY = "activations"

STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_TEMP_NAME = re.compile(r"^\.(?:\d{5}\.safetensors|%s)\.[A-Za-z0-9_]+\.tmp$" % "|".join(map(re.escape, (MANIFEST, INPUTS_FILE, LEDGER))))


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


def check_contained(directory: Path) -> None:
    """Refuse an artifact directory that is a symlink, or holds a symlinked folder or a symlink
    leading out of it: a writer must never write or delete through one (ArtifactError)."""
    if directory.is_symlink():
        raise ArtifactError(
            f"The artifact directory {directory} is a symlink (to {directory.resolve()}). The workbench does not write "
            f"or delete through symlinks; pass the real directory ({directory.resolve()}) as out_dir instead."
        )
    if not directory.exists():
        return
    root = directory.resolve()
    for here, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            path = Path(here) / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            inside = target == root or root in target.parents
            if name in dirs or not inside:
                raise ArtifactError(
                    f"{path} inside the artifact {directory} is a symlink (to {target}). The workbench does not write or "
                    "delete through symlinks, so it refuses this artifact before writing anything; remove the link "
                    "or capture into a fresh directory."
                )


class StoreWriter:
    """Writes one artifact under its lock; resumable. Use as a context manager.

    `plan` is the manifest without the shard list. Shards of the same plan already on disk are
    kept when the ledger vouches for their content (`has`); a complete artifact of another plan
    is refused unless `overwrite=True`. Only files this writer (or the interrupted writer before
    it, through the ledger; or the manifest being replaced) wrote are ever deleted.
    """

    def __init__(self, directory: str | os.PathLike, plan: dict[str, Any], overwrite: bool = False):
        self.directory = Path(directory)
        self.plan = plan
        self.plan_hash = plan_hash(plan)
        self.overwrite = overwrite
        self._lock: contextlib.AbstractContextManager | None = None
        self.shards: dict[str, dict[str, Any]] = {}
        self.ledger = LEDGER  # the ledger this writer appends to
        self.written: dict[str, set[str]] = {}  # path relative to the artifact -> sha256s any ledger recorded

    def __enter__(self) -> StoreWriter:
        check_contained(self.directory)  # before anything is created, locked or deleted
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive_lock(self.directory / LOCK_FILE)
        self._lock.__enter__()
        try:
            check_contained(self.directory)  # again under the lock: nothing swapped in meanwhile
            self._prepare()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lock is not None
        self._lock.__exit__(*exc)

    def _prepare(self) -> None:
        # temp files of a writer killed mid-write (mkstemp leaves them behind on SIGKILL): only the
        # names core.io gives this store's own files, in the artifact's own (non-symlinked) folders
        for here, _, files in os.walk(self.directory, followlinks=False):
            for name in files:
                path = Path(here) / name
                if _TEMP_NAME.match(name) and path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
        self.written = self._read_ledger()
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
                listed = [s.get("path") for s in old.get("shards", []) if isinstance(s, dict)]
                manifest.unlink()
                self._delete_own([p for p in listed if isinstance(p, str)] + list(self.written))
                self.written = {}
                self._write_ledger()

    # ---- the ledgers: what this artifact's writers wrote (path, sha256), appended after each write

    def _ledger_files(self) -> list[Path]:
        """The main ledger and the ranks' ledgers (plain files only, never a symlink)."""
        names = [LEDGER] + sorted(p.name for p in self.directory.iterdir() if _RANK_LEDGER.match(p.name))
        return [self.directory / n for n in names if (self.directory / n).is_file() and not (self.directory / n).is_symlink()]

    def _read_ledger(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for path in self._ledger_files():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:  # a line torn by a kill mid-append is skipped: that file is simply not trusted
                    entry = json.loads(line)
                    out.setdefault(str(entry["path"]), set()).add(str(entry["sha256"]))
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def reload_ledger(self) -> None:
        """Read every ledger again (rank 0, after the other ranks wrote their shards)."""
        self.written = self._read_ledger()

    def _write_ledger(self) -> None:
        """Replace the main ledger with `written` (the ranks' ledgers are folded into it)."""
        atomic_write_bytes(self.directory / LEDGER, "".join(
            json.dumps({"path": p, "sha256": h}, sort_keys=True) + "\n"
            for p, hs in self.written.items() for h in sorted(hs)).encode())
        self._drop_rank_ledgers()

    def _drop_rank_ledgers(self) -> None:
        for path in self._ledger_files():
            if path.name != LEDGER:
                path.unlink(missing_ok=True)

    def _record(self, rel: str, sha: str) -> None:
        self.written.setdefault(rel, set()).add(sha)
        with open(self.directory / self.ledger, "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": rel, "sha256": sha}, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _delete_own(self, rels: list[str]) -> None:
        """Delete files a writer of this artifact wrote (paths relative to it): each must stay inside
        the artifact and be a plain file, not a symlink; empty shard folders left behind go too."""
        for rel in sorted(set(rels)):
            try:
                path = safe_child(self.directory, rel)
            except ArtifactError:
                continue  # a path that would lead out of the artifact is never touched
            if path.is_file() and not path.is_symlink():
                path.unlink()
                parent = path.parent
                while parent != self.directory and parent.is_dir() and not parent.is_symlink() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent

    @property
    def complete(self) -> bool:
        """True when a finished artifact of this very plan is already here."""
        path = self.directory / MANIFEST
        return path.exists() and read_json(path).get("plan_hash") == self.plan_hash

    def has(self, spec: ShardSpec) -> bool:
        """A shard of this plan (same rows, hook, model) is already on disk and its content is the
        one the ledger recorded when it was written (sha256 of the whole file): keep it. A damaged,
        foreign or unrecorded file is not trusted; it is captured again."""
        path = self.directory / spec.path
        recorded = self.written.get(spec.path)
        if not recorded or not path.is_file() or path.is_symlink():
            return False
        if sha256_file(path) not in recorded:
            return False
        try:
            meta = read_tensor_metadata(path)
        except ArtifactError:
            return False
        return meta.get("plan") == self.plan_hash and meta.get("rows") == [spec.start, spec.stop]

    def write_shard(self, spec: ShardSpec, tensor: Tensor) -> None:
        meta = {"plan": self.plan_hash, "model": spec.model, "hook": spec.hook, "rows": [spec.start, spec.stop]}
        self._record(spec.path, save_tensors(self.directory / spec.path, {TENSOR_KEY: tensor}, meta))

    def write_inputs(self, inputs: Inputs) -> str:
        """Write the Inputs (deterministic bytes, so rewriting on resume changes nothing)."""
        return save_inputs(self.directory / INPUTS_FILE, inputs)

    def finish(self, specs: list[ShardSpec], inputs_sha256: str) -> dict[str, Any]:
        """Write the manifest (last): every shard with its size and sha256.

        Shard files of another plan that this artifact's writers wrote (the ledger lists them) are
        removed first; nothing else is deleted. The ledger goes once the manifest is written."""
        wanted = {spec.path for spec in specs}
        self._delete_own([p for p in self.written if p not in wanted])
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
        self._drop_rank_ledgers()
        (self.directory / LEDGER).unlink(missing_ok=True)
        self.written = {}
        return manifest


class RankWriter(StoreWriter):
    """The writer of rank R > 0 of a torchrun capture: it writes only its own shards, recording
    them in its own ledger (`.written.rank{R}.jsonl`), takes no lock (rank 0 holds it for the whole
    run) and never deletes anything. Open it only after rank 0's writer is open (so that rank 0's
    clean-up of an interrupted run is done), and let rank 0 write the inputs and the manifest."""

    def __init__(self, directory: str | os.PathLike, plan: dict[str, Any], rank: int):
        super().__init__(directory, plan)
        if rank < 1:
            raise ConfigError(f"RankWriter is for ranks > 0 (got rank {rank}); rank 0 uses StoreWriter.")
        self.ledger = f".written.rank{rank}.jsonl"

    def __enter__(self) -> RankWriter:
        check_contained(self.directory)
        self.written = self._read_ledger()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def finish(self, specs: list[ShardSpec], inputs_sha256: str) -> dict[str, Any]:
        raise ConfigError("Only rank 0 writes the manifest of a torchrun capture; a RankWriter writes shards only.")


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
        self._check_coverage()

    def _check_coverage(self) -> None:
        """Every model x hook must have shards covering rows [0, n_rows) exactly, without gap or
        overlap: a hole would otherwise read back as uninitialised memory."""
        n = int(self.manifest["n_rows"])
        by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in self.manifest["shards"]:
            by_key.setdefault((s["model"], s["hook"]), []).append(s)
        for model in self.manifest["model_order"]:
            for hook in self.manifest["hooks"]:
                at = 0
                for shard in sorted(by_key.get((model, hook), []), key=lambda s: s["rows"][0]):
                    lo, hi = shard["rows"]
                    if lo != at or hi <= lo:
                        break
                    at = hi
                if at != n:
                    raise ArtifactError(
                        f"{self.directory / MANIFEST} lists no shard for rows {at}.. of model {model!r} at hook {hook!r} "
                        f"(it has {n} rows): the artifact is incomplete or was edited. Delete it and capture again."
                    )

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
            if stop > start:  # _check_coverage makes this unreachable for a manifest that passed open()
                raise ArtifactError(f"No shard of {self.directory} holds rows {start}..{stop} of {model!r} at {hook!r}. "
                                    "Delete the artifact and capture again.")
            out = torch.zeros((0, *self.manifest["row_shapes"][hook]), dtype=self.storage_dtype)
        else:
            out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            bad = (~torch.isfinite(out)).reshape(len(out), -1).any(dim=1).nonzero()[0, 0].item() + start
            raise NumericsError(
                f"Activations of model {model!r} at hook {hook!r} in {self.directory} hold NaN or inf (first at row "
                f"{bad}). The model's weights or inputs overflow; check the model (load_model reports non-finite "
                "weights) or capture in float32."
            )
        return out.to(device=device, dtype=dtype or out.dtype)

    def iter_rows(self, model: str, hook: str, batch_rows: int = 4096) -> Iterator[tuple[int, Tensor]]:
        """(start, activations) for consecutive row blocks: stream a hook without loading it whole."""
        for start in range(0, self.n_rows, batch_rows):
            yield start, self.read(model, hook, slice(start, start + batch_rows))

    def verify_all(self) -> None:
        """Check every file's sha256 now (raises ChecksumError naming the first bad file) and that
        every model x hook is covered by shards (ArtifactError)."""
        self._check_coverage()
        for shard in self.manifest["shards"]:
            self._check(shard)
        self._inputs = None
        _ = self.inputs
