"""Per-row alignment scores streamed to disk batch by batch: flat memory, resumable, and split
over `torchrun` processes with the same bytes as one process.

`stream_alignment_scores(model, inputs, directions, objective, out_dir)` computes, for each
direction and each batch of `batch_size` consecutive rows, exactly what the in-memory
`workbench.engines.per_example.alignment_scores` computes for those rows (the same batch, the
same forward-mode pass, the same zero padding to the full width before a_i is summed), writes
it as two shards (a_i and a_{i,t}; `workbench.analyses.score_store`) and forgets it, so memory
does not grow with the number of rows. A killed run resumes: the same call again computes only
the batches whose shards are missing or damaged (the activation store's ledgers vouch for the
rest), and returns a finished store without computing anything.

Under `torchrun` (a process group initialised, e.g. by `workbench.core.distributed.init_if_launched`)
whole batches are shared out by `shard_slice` (job i of the (direction, batch) list goes to rank
i % world_size) through the capture's own protocol (`workbench.capture.ranked`: rank 0 opens the
store, every rank writes its shards, rank 0 writes the manifest after all succeed). A batch's
rows do not depend on the number of processes, so neither do the floats: the store is
byte-identical to a one-process run.

An existing store of other inputs, directions, model, objective or batch size in `out_dir` is
refused (naming what differs) unless `overwrite=True`. The plan names the model, the teacher and
each direction by the sha256 of its values, or, where `recipes` (`workbench.analyses.score_recipes`)
give one, by its recipe: at 7B that is the checkpoint files' hashes instead of a read of every
weight per direction on every rank (`python -m workbench.align_rows` on Hugging Face directories).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.analyses.score_recipes import PlanRecipes
from workbench.analyses.score_store import SCORES_KIND, SCORES_SCHEMA_VERSION, ScoreStore, batch_specs
from workbench.capture.ranked import capture_ranked
from workbench.capture.store import MANIFEST, SHARD_DIR, StoreWriter, check_path_name, dtype_name, weights_sha256
from workbench.core import distributed
from workbench.core.errors import ArtifactError, ConfigError
from workbench.core.inputs import Inputs
from workbench.core.io import read_json, read_tensor_metadata, sha256_bytes, to_json
from workbench.core.provenance import package_versions
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective
from workbench.engines.per_example import JVP_METHODS, JvpMethod, alignment_scores

_IDENTITY = ("inputs", "n_rows", "width", "directions", "direction_sha256", "model_sha256", "objective", "batch_size",
             "method", "memory_budget_bytes", "score_dtype", "meta")
"""The plan fields that make two stores different (named in the error when they differ)."""


@dataclass
class RowScoresConfig:
    """How `stream_alignment_scores` runs. batch_size: rows per forward-mode pass and per shard
    (the memory bound); method / memory_budget_bytes: as `alignment_scores`; overwrite: replace a
    store of other inputs or directions in `out_dir`; progress: a bar over batches."""

    batch_size: int = 256
    method: JvpMethod = "auto"
    memory_budget_bytes: int | None = None
    overwrite: bool = False
    progress: bool = False

    def validate(self) -> RowScoresConfig:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r}; give a whole number of rows >= 1.")
        if self.method not in JVP_METHODS:
            raise ConfigError(f"method={self.method!r}; use one of {', '.join(JVP_METHODS)}.")
        if self.memory_budget_bytes is not None and self.memory_budget_bytes <= 0:
            raise ConfigError(f"memory_budget_bytes={self.memory_budget_bytes}; give a positive number of bytes, or "
                              "None for no limit.")
        return self


def recipe_sha256(recipe: Mapping[str, Any]) -> str:
    """The sha256 a recipe stands for in the plan (over its sorted JSON)."""
    return sha256_bytes(to_json(dict(recipe)).encode())


def _objective_identity(objective: Objective, recipe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    teacher = objective.teacher
    if teacher is None:
        who: Any = None
    elif recipe is not None:
        who = recipe_sha256(recipe)
    elif isinstance(teacher, Mapping):
        who = weights_sha256(dict(teacher))
    else:  # a teacher's logits: its weights when it has them; a prompted one: its system prompt (the base is the model)
        params = getattr(teacher, "params", None)
        role = getattr(teacher, "role", None)
        if isinstance(params, Mapping):
            who = weights_sha256(dict(params))
        elif role is not None and hasattr(role, "meta"):
            who = {"prompted": role.meta(), "prefixes": [list(role.prefix.base_prefix), list(role.prefix.teacher_prefix)]}
        else:
            who = type(teacher).__name__
    return {"kind": objective.kind, "ids": None if objective.ids is None else [int(i) for i in objective.ids.tolist()],
            "teacher": who}


def score_plan(model: AlignmentModel, inputs: Inputs, directions: Mapping[str, Mapping[str, Tensor]],
               objective: Objective, config: RowScoresConfig, meta: Mapping[str, Any] | None = None,
               recipes: PlanRecipes | None = None) -> dict[str, Any]:
    """The manifest without its shards: everything the scores depend on (hashes, no paths, no times).
    A model, teacher or direction with a recipe in `recipes` is named by it, never read."""
    named = recipes or PlanRecipes()
    plan = {
        "kind": SCORES_KIND,
        "store_schema_version": SCORES_SCHEMA_VERSION,
        "inputs": {"content_hash": inputs.content_hash(), "n_rows": len(inputs)},
        "n_rows": len(inputs),
        "width": int(inputs.tokens.shape[1]) - 1,
        "directions": list(directions),
        "direction_sha256": {name: recipe_sha256(named.directions[name]) if name in named.directions
                             else weights_sha256(d) for name, d in directions.items()},  # type: ignore[arg-type]
        "model_sha256": recipe_sha256(named.model) if named.model is not None else weights_sha256(dict(model.params)),
        "objective": _objective_identity(objective, named.teacher),
        "batch_size": config.batch_size,
        "method": config.method,
        "memory_budget_bytes": config.memory_budget_bytes,
        "score_dtype": dtype_name(model.score_dtype),
        "compute_dtype": dtype_name(model.dtype),
        "meta": dict(meta or {}),
        "versions": package_versions(),
    }
    if recipes is not None:  # what the hashes above stand for (a plan without recipes is as it always was)
        plan["recipes"] = recipes.as_json()
    return plan


def refuse_other_store(out_dir: Path, plan: dict[str, Any], overwrite: bool) -> None:
    """ArtifactError when `out_dir` holds a finished or interrupted store of another plan (or
    something that is not a score store), naming what differs and the fix; nothing with overwrite."""
    from workbench.capture.store import plan_hash

    fix = "Pass --overwrite (overwrite=True) to replace it, or choose another --out."
    manifest = out_dir / MANIFEST
    if manifest.exists():
        old = read_json(manifest)
        if not isinstance(old, dict) or old.get("kind") != SCORES_KIND:
            raise ArtifactError(f"{out_dir} holds something other than alignment scores (kind "
                                f"{old.get('kind') if isinstance(old, dict) else None!r}); choose another --out.")
        if overwrite or old.get("plan_hash") == plan_hash(plan):
            return
        differs = [k for k in _IDENTITY if old.get(k) != plan.get(k)]
        if isinstance(old.get("inputs"), dict) and old["inputs"].get("content_hash") == plan["inputs"]["content_hash"]:
            differs = [k for k in differs if k != "inputs"]
        raise ArtifactError(f"{out_dir} already holds alignment scores of other {', '.join(differs) or 'versions'} "
                            f"than this run's. {fix}")
    shards = out_dir / SHARD_DIR
    if overwrite or not shards.is_dir():
        return
    want = plan_hash(plan)
    for path in sorted(shards.rglob("*.safetensors")):
        if path.is_file() and not path.is_symlink():
            try:
                got = read_tensor_metadata(path).get("plan")
            except ArtifactError:
                continue  # a damaged file is simply scored again
            if got != want:
                raise ArtifactError(f"{out_dir} holds an interrupted run of alignment scores with other inputs or "
                                    f"configuration ({path.relative_to(out_dir)} belongs to plan {got!r}, this run is "
                                    f"{want!r}). {fix}")


def _check_same_plan(plan: dict[str, Any]) -> None:
    """Every rank made the same plan (same rows, directions, model): else their shards would not
    belong to one store. A direction computed with different thread counts can differ in its last bits."""
    from workbench.capture.store import plan_hash

    mine = int(plan_hash(plan)[:15], 16)
    if not distributed.all_ok(distributed.broadcast_int(mine) == mine):
        raise ConfigError("The torchrun ranks computed different score plans (their rows, directions or model "
                          "differ; a direction made by a backward pass can differ in its last bits between thread "
                          "counts). Give every rank the same data and the same --threads.")


def stream_alignment_scores(
    model: AlignmentModel,
    inputs: Inputs,
    directions: Mapping[str, Mapping[str, Tensor]],
    objective: Objective,
    out_dir: str | os.PathLike,
    config: RowScoresConfig | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    ranks: distributed.RankInfo | None = None,
    recipes: PlanRecipes | None = None,
) -> ScoreStore:
    """a_i and a_{i,t} of every row along each named direction, written to `out_dir` batch by
    batch (see the module doc); returns the opened `ScoreStore`. `meta`: what the caller wants
    recorded (and matched on resume), e.g. the organism seed. `ranks`: the ranks that share the
    batches (default: the initialised process group, if any; `RankInfo()` for one process).
    `recipes`: what names the model, teacher and directions in the plan instead of their values
    (`score_recipes.lineage_recipes`; the caller vouches that they are what the recipes say)."""
    config = (config or RowScoresConfig()).validate()
    if not directions:
        raise ConfigError("No direction to score; pass directions={name: direction, ...}.")
    checked = {check_path_name("direction", name): check_direction(model, d, name) for name, d in directions.items()}
    out = Path(out_dir)
    plan = score_plan(model, inputs, checked, objective, config, meta, recipes)
    info = ranks if ranks is not None else distributed.current()
    here = distributed.current()
    if info.distributed and (info.rank, info.world_size) != (here.rank, here.world_size):
        raise ConfigError(f"ranks={info} is not this process's place in the process group ({here}). "
                          "Pass ranks=None (the group's) or RankInfo() for a one-process run.")
    if info.distributed:
        _check_same_plan(plan)
    refuse_other_store(out, plan, config.overwrite)
    n, bs, width = len(inputs), config.batch_size, plan["width"]
    jobs = [(name, b) for name in checked for b in range(math.ceil(n / bs))]
    specs = [spec for name, b in jobs for spec in batch_specs(name, b, bs, n)]

    def write_jobs(writer: StoreWriter, mine: list[tuple[str, int]], progress: bool) -> None:
        for name, b in tqdm(mine, desc="alignment rows", unit="batch", disable=not progress, leave=False):
            total_spec, token_spec = batch_specs(name, b, bs, n)
            if writer.has(total_spec) and writer.has(token_spec):
                continue
            part = inputs.select(slice(total_spec.start, total_spec.stop))  # the batch alignment_scores makes
            got = alignment_scores(model, part, checked[name], objective, batch_size=bs, method=config.method,
                                   memory_budget_bytes=config.memory_budget_bytes).per_token
            per_token = torch.zeros(len(part), width, dtype=model.score_dtype)  # as alignment_scores pads
            per_token[:, : got.shape[1]] = got
            writer.write_shard(token_spec, per_token)
            writer.write_shard(total_spec, per_token.sum(-1))

    if info.distributed:
        return capture_ranked(out, plan, info, jobs=jobs, specs=specs, overwrite=config.overwrite,
                              write_inputs=lambda writer: writer.write_inputs(inputs), write_jobs=write_jobs,
                              announce=None, progress=config.progress, reopen=ScoreStore.open)
    with StoreWriter(out, plan, overwrite=config.overwrite) as writer:
        if not writer.complete:
            inputs_sha = writer.write_inputs(inputs)
            write_jobs(writer, jobs, config.progress)
            writer.finish(specs, inputs_sha)
    return ScoreStore.open(out)


__all__ = ["PlanRecipes", "RowScoresConfig", "recipe_sha256", "refuse_other_store", "score_plan",
           "stream_alignment_scores"]
