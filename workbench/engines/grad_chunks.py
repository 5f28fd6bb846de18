"""Per-example gradients under a memory budget: grad L_i for a few rows and a few parameter keys at
a time, so that per-group alignment never holds a batch of per-example full gradients
(batch x n_params: ~1 TB in bf16 for 64 rows of a 7B model).

`plan_grad_chunks` picks the calls (rows per `vmap(grad)` call, keys differentiated per call) so
that each call's per-example gradients take at most `budget` bytes; `grad_chunks` runs them.

Why chunked `vmap(grad)` rather than one jvp per (direction, group): per-group scores of D
directions over G groups would take D x G forward-mode passes (8 random controls + 4 directions
over ~20 groups on a 4-layer model: ~240 passes per batch), and |grad L_i| (the cosines) is not
a directional derivative at all. One gradient call serves every direction and both norms, exactly.

Which plan: the compute of a plan is (number of calls) x (rows per call); every call recomputes
the forward and backward of its rows. Splitting keys repeats that work per key chunk, splitting
rows does not. So the plan keeps every key in one call and lowers the rows per call until the
call fits; only when one row of the whole model exceeds the budget does it split the keys (one
row per call, keys packed in order up to the budget). A budget of at least batch x model bytes
(or None) is the single call of before, with identical arithmetic.

The budget counts the per-example gradients a call returns; the backward's transient
activations (rows x seq x d_model, batch-sized) and the float64 squares of one key for the norms
come on top. Its floor is one row of the largest parameter (a ConfigError names it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from workbench.core.errors import ConfigError
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Batch, Objective
from workbench.engines.per_example import pack_keys, per_example_grads


@dataclass(frozen=True)
class GradChunk:
    """One kind of `vmap(grad)` call: these keys, `rows` rows at a time; `bytes` is the most one
    call's per-example gradients take (rows x the keys' sizes x bytes per element)."""

    keys: tuple[str, ...]
    rows: int
    bytes: int


def plan_grad_chunks(
    sizes: Mapping[str, int], itemsize: int, batch_rows: int, budget: int | None
) -> list[GradChunk]:
    """The calls that give every row of a `batch_rows` batch its gradient w.r.t. every key of
    `sizes` (key -> number of elements) with at most `budget` bytes of per-example gradients per
    call (None: no limit, one call). See the module doc for why this plan."""
    if batch_rows < 1:
        raise ConfigError(f"batch_rows={batch_rows}; a batch has at least one row.")
    keys = tuple(sizes)
    per_row = sum(sizes.values()) * itemsize
    if budget is None or per_row * batch_rows <= budget:
        return [GradChunk(keys, batch_rows, per_row * batch_rows)]
    if budget <= 0:
        raise ConfigError(f"memory_budget_bytes={budget}; give a positive number of bytes, or None for no limit.")
    if per_row <= budget:
        rows = budget // per_row
        return [GradChunk(keys, rows, per_row * rows)]
    biggest = max(keys, key=lambda k: sizes[k])
    if sizes[biggest] * itemsize > budget:
        raise ConfigError(
            f"memory_budget_bytes={budget} is below one row of the gradient of {biggest!r} "
            f"({sizes[biggest] * itemsize} bytes); raise it to at least that.")
    nbytes = {k: sizes[k] * itemsize for k in keys}
    return [GradChunk(pack, 1, sum(nbytes[k] for k in pack)) for pack in pack_keys(nbytes, budget)]


def grad_chunks(
    model: AlignmentModel, objective: Objective, batch: Batch, at: Mapping[str, Tensor], plan: Sequence[GradChunk]
) -> Iterator[tuple[slice, dict[str, Tensor]]]:
    """For each call of `plan`: the rows it covers (a slice of the batch) and grad L_i of those
    rows w.r.t. the call's keys, each [rows, *shape]. A single call of every key over the whole
    batch is `per_example_grads` of before, unchanged."""
    n = batch.tokens.shape[0]
    every = len(plan) == 1 and set(plan[0].keys) == set(at)
    for chunk in plan:
        for start in range(0, n, chunk.rows):
            stop = min(n, start + chunk.rows)
            part = batch if (start, stop) == (0, n) else Batch(
                batch.tokens[start:stop], batch.mask[start:stop],
                None if batch.targets is None else batch.targets[start:stop], slice(start, stop))
            yield slice(start, stop), per_example_grads(model, objective, part, at, None if every else chunk.keys)


def model_plan(model: AlignmentModel, at: Mapping[str, Tensor], batch_rows: int, budget: int | None) -> list[GradChunk]:
    """`plan_grad_chunks` for the parameters `at` in the model's dtype."""
    itemsize = next(iter(at.values())).element_size() if at else model.dtype.itemsize
    return plan_grad_chunks({k: v.numel() for k, v in at.items()}, itemsize, batch_rows, budget)


__all__ = ["GradChunk", "grad_chunks", "model_plan", "plan_grad_chunks"]
