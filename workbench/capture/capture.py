"""Capture activations of a Lineage's models on one Inputs into an artifact (`workbench.capture.store`).

`capture(lineage, inputs, hooks, positions=...)` runs each chosen model over the same Inputs,
batched, under `torch.inference_mode()`, with `names_filter` (only the asked hooks are kept,
never attention patterns you did not ask for) and `stop_at_layer` just past the deepest asked
layer. It streams shard by shard (rows [start, stop) of one hook of one model per file), so
memory does not grow with the number of inputs, and it is resumable: run the same call again
after a crash and it writes only the missing shards; the result is byte-identical.

Positions (activations of hooks shaped [batch, pos, ...]):
- "all": every position, [n, pos, ...]; pad positions are stored as zeros.
- "last": the last non-pad token of each row, [n, ...].
- "mean": mean over the Inputs `mask` (e.g. the completion tokens), [n, ...]; computed in fp32.
- a list of position indices, [n, k, ...]; every row must be long enough.

Hook names are checked against the models' hooks and their aliases before any work (the bridge
exposes both `blocks.0.hook_resid_post` and its structural alias `blocks.0.hook_out`); aliases
are stored once, under the classic name.

Under `torchrun` (a process group initialised, e.g. by `workbench.core.distributed.init_if_launched`)
the shards are split over the ranks: the i-th (model, chunk) pair in capture order goes to rank
i % world_size, each rank writes its own shard files into the same artifact, and rank 0 writes
the inputs and, after every rank is done, the manifest. Each shard is computed exactly as one
process computes it, so the artifact is byte-identical to a one-process capture.

A prompted role of the lineage (the base under a system prompt, `Lineage.add_prompted`) is
captured like a model: its base runs on the system-prompted rows and the activations are moved
back to the rows' positions (`workbench.capture.prompted`); the manifest records it as prompted,
with its base as parent and the base's weight hash. A position rule that reads inside a
replaced base prefix ("mean" over such positions, an index there) is refused for it.

>>> import tempfile
>>> from workbench.core.examples import tiny_inputs, tiny_lineage
>>> lin, inputs = tiny_lineage(("base", "student")), tiny_inputs()
>>> out = tempfile.TemporaryDirectory()
>>> store = capture(lin, inputs, ["blocks.0.hook_resid_post"], positions="mean",
...                 out_dir=out.name, progress=False)
>>> store.read("student", "blocks.0.hook_resid_post").shape   # [rows, d_model]
torch.Size([2, 8])
>>> out.cleanup()
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.capture.hooks import resolve_hooks, run_cached, stop_layer
from workbench.capture.prompted import bridge_of, check_hooks, prompted_cache
from workbench.capture.ranked import capture_ranked
from workbench.core import distributed
from workbench.core.errors import ConfigError, DataError, unknown_name
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import resolve_device
from workbench.core.progress import progress_bar
from workbench.core.prompted import PromptedRole
from workbench.core.provenance import package_versions
from workbench.capture.store import (
    STORE_KIND,
    STORE_SCHEMA_VERSION,
    ActivationStore,
    ShardSpec,
    StoreWriter,
    check_path_name,
    dtype_name,
    storage_dtype_of,
    weights_sha256,
)

PositionRule = Literal["all", "last", "mean"] | Sequence[int]
DEFAULT_CHUNK_BYTES = 16 * 2**20  # rows held in memory at once: ~16 MB over all hooks of one model


# --------------------------------------------------------------------------- positions


def parse_positions(positions: PositionRule) -> str | list[int]:
    if isinstance(positions, str):
        if positions not in ("all", "last", "mean"):
            raise unknown_name("position rule", positions, ["all", "last", "mean"],
                               fix="Or pass a list of position indices.")
        return positions
    idx = [int(p) for p in positions]
    if not idx or any(p < 0 for p in idx):
        raise ConfigError(f"positions={list(positions)!r}: give a non-empty list of position indices >= 0.")
    return idx


def check_positions(rule: str | list[int], inputs: Inputs) -> None:
    """DataError before any work when a row cannot give the asked positions."""
    if rule == "mean":
        empty = (~inputs.mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise DataError(
                f"positions='mean' averages over the Inputs mask, but {len(empty)} rows have no counted position "
                f"(first: row {empty[0]}). Drop them, or use positions='last'."
            )
    elif isinstance(rule, list):
        short = (inputs.lengths <= max(rule)).nonzero().flatten().tolist()
        if short:
            raise DataError(
                f"Position {max(rule)} is past the end of {len(short)} rows (first: row {short[0]}, "
                f"{int(inputs.lengths[short[0]])} tokens). Use smaller indices or drop short rows."
            )


def reduce_positions(
    act: Float[Tensor, "batch pos *rest"],
    rule: str | list[int],
    attention_mask: Bool[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
) -> Tensor:
    """Apply a position rule to one batch's activations (pos on dim 1), on the activation's device
    (a model spread over devices by a device map leaves each layer's cache on that layer's device)."""
    attention_mask, mask = attention_mask.to(act.device), mask.to(act.device)
    if rule == "all":  # pad positions -> 0, so they never pass for activations
        return act * attention_mask.reshape(*attention_mask.shape, *([1] * (act.ndim - 2))).to(act.dtype)
    if rule == "last":
        last = attention_mask.sum(dim=1) - 1
        return act[torch.arange(act.shape[0], device=act.device), last]
    if rule == "mean":
        m = mask.to(torch.float32).reshape(*mask.shape, *([1] * (act.ndim - 2)))
        return (act.to(torch.float32) * m).sum(dim=1) / m.sum(dim=1)
    return act[:, rule]


def row_shape(act_shape: Sequence[int], rule: str | list[int], width: int) -> tuple[int, ...]:
    """Per-row stored shape of a hook whose activation (one row) has shape [1, pos, *rest]."""
    rest = tuple(act_shape[2:])
    if rule == "all":
        return (width, *rest)
    if isinstance(rule, list):
        return (len(rule), *rest)
    return rest


# --------------------------------------------------------------------------- the capture


@dataclass
class CapturePlan:
    """What a capture will do, worked out (and checked) before any work."""

    models: list[str]
    hooks: list[str]
    aliases: dict[str, list[str]]
    positions: str | list[int]
    row_shapes: dict[str, tuple[int, ...]]
    storage_dtype: torch.dtype
    shard_rows: int
    batch_size: int
    stop_at_layer: int | None
    n_rows: int
    width: int

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return [(a, min(a + self.shard_rows, self.n_rows)) for a in range(0, self.n_rows, self.shard_rows)]

    def shards(self, model: str) -> list[list[ShardSpec]]:
        """Per chunk, one spec per hook."""
        return [[ShardSpec(model, h, i, a, b) for h in self.hooks] for i, (a, b) in enumerate(self.chunks)]

    @property
    def nbytes(self) -> int:
        """Bytes of activations the capture writes (headers aside)."""
        item = torch.empty((), dtype=self.storage_dtype).element_size()
        per_row = sum(math.prod(s) for s in self.row_shapes.values()) * item
        return per_row * self.n_rows * len(self.models)


def _probe_shapes(bridge: TransformerBridge, hooks: list[str], inputs: Inputs, stop: int | None,
                  device: torch.device) -> dict[str, tuple[int, ...]]:
    """Activation shape of each hook on one row; refuse hooks without a position axis at dim 1."""
    one = inputs.select([0])
    with torch.inference_mode():
        cache = run_cached(bridge, one.tokens.to(device), hooks, stop)
    shapes = {}
    for h in hooks:
        shape = tuple(cache[h].shape)
        if len(shape) < 2 or shape[0] != 1 or shape[1] != one.tokens.shape[1]:
            raise ConfigError(
                f"Hook {h!r} has activations of shape {shape} with no position axis at dim 1 (attention "
                "patterns and scores are [batch, head, q, k]); capture supports hooks shaped [batch, pos, ...]. "
                "Capture hook_z or hook_attn_out instead, or leave this hook out."
            )
        shapes[h] = shape
    return shapes


def plan_capture(
    lineage: Lineage,
    inputs: Inputs,
    hooks: str | Sequence[str],
    positions: PositionRule = "all",
    roles: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    storage_dtype: str | torch.dtype = "float32",
    shard_rows: int | None = None,
    device: torch.device | None = None,
) -> CapturePlan:
    """Check everything a capture needs (names, positions, data) and size it, doing no capture."""
    models = list(roles) if roles is not None else lineage.names
    for m in models:
        if not lineage.is_prompted(m):
            lineage[m]  # unknown model names -> UnknownNameError listing the valid ones
        check_path_name("model", m)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}; it must be >= 1.")
    first = bridge_of(lineage, models[0])
    names, aliases = resolve_hooks(first, hooks)
    rule = parse_positions(positions)
    inputs.validate(lineage.d_vocab, lineage.n_ctx)
    check_positions(rule, inputs)
    for m in [m for m in models if lineage.is_prompted(m)]:  # before any work: hooks, context, positions read
        check_hooks(names)
        prompted_cache(None, lineage.prompted[m], inputs.tokens, inputs.pad_id, (), None, lineage.n_ctx,
                       counted=_counted(rule, inputs.attention_mask, inputs.mask), dry_run=True)
    n_layers = int(lineage.cfg.n_layers)
    stop = stop_layer(names, n_layers)
    width = int(inputs.lengths.max())
    shapes = _probe_shapes(first, names, inputs, stop, device or lineage.device)
    dtype = storage_dtype_of(storage_dtype)
    rows = {h: row_shape(s, rule, width) for h, s in shapes.items()}
    if shard_rows is None:
        row_bytes = sum(math.prod(s) for s in rows.values()) * torch.empty((), dtype=dtype).element_size()
        shard_rows = max(batch_size, (DEFAULT_CHUNK_BYTES // max(row_bytes, 1)) // batch_size * batch_size)
    if shard_rows < 1:
        raise ConfigError(f"shard_rows={shard_rows}; it must be >= 1.")
    return CapturePlan(models, names, aliases, rule, rows, dtype, int(shard_rows), batch_size, stop, len(inputs), width)


def _manifest_plan(lineage: Lineage, inputs: Inputs, plan: CapturePlan, device: torch.device) -> dict[str, Any]:
    models = {}
    for m in plan.models:
        if lineage.is_prompted(m):
            role = lineage.prompted[m]
            models[m] = {"role": role.role, "parent": role.base, "weights_sha256": weights_sha256(lineage[role.base].state_dict()),
                         "data": None, "seed": None, **role.meta(),
                         "prefixes": [list(role.prefix.base_prefix), list(role.prefix.teacher_prefix)]}
            continue
        rec = lineage.record(m)
        models[m] = {
            "role": rec.role,
            "parent": rec.parent,
            "weights_sha256": weights_sha256(lineage[m].state_dict()),
            "data": rec.data,
            "seed": rec.seed,
        }
    return {
        "kind": STORE_KIND,
        "store_schema_version": STORE_SCHEMA_VERSION,
        "models": models,
        "model_order": plan.models,
        "hooks": plan.hooks,
        "hook_aliases": plan.aliases,
        "positions": plan.positions,
        "row_shapes": {h: list(s) for h, s in plan.row_shapes.items()},
        "compute_dtype": dtype_name(lineage.dtype),
        "storage_dtype": dtype_name(plan.storage_dtype),
        "stop_at_layer": plan.stop_at_layer,
        "n_rows": plan.n_rows,
        "width": plan.width,
        "shard_rows": plan.shard_rows,
        "batch_size": plan.batch_size,
        "device_type": device.type,
        "inputs": {"content_hash": inputs.content_hash(), "n_rows": len(inputs)},
        "versions": package_versions(),
    }


def _counted(rule: str | list[int], attention_mask: Tensor, mask: Tensor) -> Tensor | None:
    """Positions a position rule reads (for a prompted role: none may lie in a replaced prefix)."""
    if rule == "mean":
        return mask
    if isinstance(rule, list):
        out = torch.zeros_like(attention_mask)
        out[:, [p for p in rule if p < out.shape[1]]] = True
        return out
    return None  # "all" stores zeros there; "last" reads the last token, after any prefix


def _capture_chunk(bridge: TransformerBridge, chunk: Inputs, plan: CapturePlan, device: torch.device,
                   prompted: PromptedRole | None = None, n_ctx: int = 0) -> dict[str, Tensor]:
    """Activations of one model (or prompted role: `bridge` is its base's) on one chunk of rows,
    position rule applied, in storage dtype (CPU)."""
    n = len(chunk)
    out = {h: torch.zeros((n, *plan.row_shapes[h]), dtype=plan.storage_dtype) for h in plan.hooks}
    for start in range(0, n, plan.batch_size):
        batch = chunk.select(slice(start, start + plan.batch_size))
        tokens = batch.tokens.to(device)
        with torch.inference_mode():
            if prompted is None:
                cache = run_cached(bridge, tokens, plan.hooks, plan.stop_at_layer)
            else:
                cache = prompted_cache(bridge, prompted, tokens, batch.pad_id, plan.hooks, plan.stop_at_layer, n_ctx,
                                       counted=_counted(plan.positions, batch.attention_mask, batch.mask))
            att, mask = batch.attention_mask.to(device), batch.mask.to(device)
            for h in plan.hooks:
                reduced = reduce_positions(cache[h], plan.positions, att, mask).to(plan.storage_dtype).cpu()
                if plan.positions == "all":
                    out[h][start:start + len(batch), : reduced.shape[1]] = reduced
                else:
                    out[h][start:start + len(batch)] = reduced
        del cache
    return out


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def capture(
    lineage: Lineage,
    inputs: Inputs,
    hooks: str | Sequence[str],
    positions: PositionRule = "all",
    roles: Sequence[str] | None = None,
    *,
    out_dir: str | Path,
    batch_size: int = 64,
    storage_dtype: str | torch.dtype = "float32",
    shard_rows: int | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
    ranks: distributed.RankInfo | None = None,
) -> ActivationStore:
    """Capture `hooks` of the models `roles` (default: all) on `inputs` into `out_dir`.

    Returns the opened `ActivationStore`. Resumable: a second call with the same arguments
    finishes an interrupted capture, or returns the finished one without recomputing.

    lineage: the models (they are moved to `device` in place when one is given).
    inputs: the rows every model sees; stored in the artifact (token ids included).
    hooks: TransformerLens hook names or their aliases, e.g. "blocks.1.hook_resid_post".
    positions: "all", "last", "mean" (over `inputs.mask`) or a list of position indices.
    roles: names of the models to capture (default: every model in the lineage); a prompted role
        (`Lineage.add_prompted`) is captured through its base on the system-prompted rows.
    out_dir: the artifact directory (created; locked while writing).
    batch_size: rows per forward pass.
    storage_dtype: float32, bfloat16 or float16 (compute stays in the models' dtype).
    shard_rows: rows per shard (default: ~16 MB over all hooks, a multiple of batch_size): the memory bound.
    device: where the models run (default: where the lineage already is).
    overwrite: replace a finished artifact of a different capture in `out_dir`.
    progress: a progress bar over batches (and the size to be written) on stderr.
    ranks: the ranks that share the shards (default: the initialised process group, if any;
        `RankInfo()` for a one-process capture inside a launched process).
    """
    dev = resolve_device(device) if device is not None else lineage.device
    if dev != lineage.device:
        lineage.to(dev)
    plan = plan_capture(lineage, inputs, hooks, positions, roles, batch_size=batch_size,
                        storage_dtype=storage_dtype, shard_rows=shard_rows, device=dev)
    manifest_plan = _manifest_plan(lineage, inputs, plan, dev)
    info = ranks if ranks is not None else distributed.current()
    if info.distributed and (info.rank, info.world_size) != (distributed.current().rank, distributed.current().world_size):
        raise ConfigError(f"ranks={info} is not this process's place in the process group ({distributed.current()}). "
                          "Pass ranks=None (the group's) or RankInfo() for a one-process capture.")
    if info.distributed:
        return capture_ranked(
            Path(out_dir), manifest_plan, info, jobs=_jobs(plan), specs=_all_specs(plan), overwrite=overwrite,
            write_inputs=lambda writer: writer.write_inputs(inputs),
            write_jobs=lambda writer, jobs, show: _write_shards(writer, lineage, inputs, plan, dev, jobs, show),
            announce=(lambda: _announce(plan, out_dir, info.world_size)) if progress else None, progress=progress)
    with StoreWriter(out_dir, manifest_plan, overwrite=overwrite) as writer:
        if not writer.complete:
            if progress:
                _announce(plan, out_dir)
            inputs_sha = writer.write_inputs(inputs)
            _write_shards(writer, lineage, inputs, plan, dev, _jobs(plan), progress)
            writer.finish(_all_specs(plan), inputs_sha)
    return ActivationStore.open(out_dir)


def _announce(plan: CapturePlan, out_dir: str | Path, ranks: int = 1) -> None:
    over = f" over {ranks} processes" if ranks > 1 else ""
    print(
        f"capture: {len(plan.models)} models x {len(plan.hooks)} hooks x {plan.n_rows} rows "
        f"(positions={plan.positions!r}, {dtype_name(plan.storage_dtype)}) -> "
        f"{human_bytes(plan.nbytes)} in {out_dir}{over}",
        file=sys.stderr,
    )


def _jobs(plan: CapturePlan) -> list[tuple[str, int]]:
    """(model, chunk index) in capture order: the unit of work, one shard file per hook."""
    return [(m, i) for m in plan.models for i in range(len(plan.chunks))]


def _all_specs(plan: CapturePlan) -> list[ShardSpec]:
    return [spec for m in plan.models for chunk in plan.shards(m) for spec in chunk]


def _write_shards(writer: StoreWriter, lineage: Lineage, inputs: Inputs, plan: CapturePlan, dev: torch.device,
                  jobs: list[tuple[str, int]], progress: bool) -> None:
    """Capture and write the shards of `jobs`, skipping those already on disk (`writer.has`)."""
    batches = [math.ceil((b - a) / plan.batch_size) for a, b in plan.chunks]
    bar = progress_bar(total=sum(batches[i] for _, i in jobs), desc="capture", unit="batch", enabled=progress)
    shards = {m: plan.shards(m) for m in plan.models}
    for model, i in jobs:
        chunk_specs = shards[model][i]
        if all(writer.has(s) for s in chunk_specs):
            bar.update(batches[i])
            continue
        bridge = bridge_of(lineage, model)
        role = lineage.prompted[model] if lineage.is_prompted(model) else None
        a, b = plan.chunks[i]
        acts = _capture_chunk(bridge, inputs.select(slice(a, b)), plan, dev, role, lineage.n_ctx)
        for spec in chunk_specs:
            writer.write_shard(spec, acts[spec.hook])
        bar.update(batches[i])
    bar.close()
