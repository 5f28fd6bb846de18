"""Activations of a prompted role (the base under a system prompt) on the rows' own tokens.

The base runs on each row with its base prefix swapped for the teacher's (or the teacher prefix
prepended; `workbench.core.prompted`), and the activations are moved back to the row's positions,
so that at every position from the last base-prefix token on they compare one to one with another
model's activations on the row itself (positions inside a replaced prefix are zeros). Same hooks
and names as `capture`; the base's bridge is used, never a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.capture.hooks import resolve_hooks, stop_layer
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage


def prompted_activations(
    lineage: Lineage, name: str, inputs: Inputs, hooks: str | Sequence[str], batch_size: int = 32,
) -> dict[str, Float[Tensor, "n pos d"]]:
    """hook -> [rows, the rows' positions, d] activations of prompted role `name` (its base run on
    the system-prompted rows, moved back to the rows' positions), on the CPU."""
    if not lineage.is_prompted(name):
        raise ConfigError(f"{name!r} is not a prompted role of this lineage (prompted: {sorted(lineage.prompted)}). "
                          "Use workbench.capture for models with weights.")
    role = lineage.prompted[name]
    bridge = lineage[role.base]
    names, _ = resolve_hooks(bridge, hooks)
    per_pair = [h for h in names if h.endswith(("hook_pattern", "hook_attn_scores"))]
    if per_pair:
        raise ConfigError(f"Hook {per_pair[0]!r} is [batch, head, query, key]: its key positions would include the "
                          "system prompt's. Read hooks whose second dimension is the position (resid, attn_out, mlp_out, z).")
    stop = stop_layer(names, lineage.cfg.n_layers)
    device = lineage.device
    out: dict[str, list[Tensor]] = {h: [] for h in names}
    for part in inputs.batches(batch_size):
        batch = role.prefix.inputs(part.tokens, pad_id=part.pad_id)
        if batch.tokens.shape[1] > lineage.n_ctx:
            raise DataError(f"With the system prompt the rows are {batch.tokens.shape[1]} tokens, longer than the "
                            f"context ({lineage.n_ctx}). Use shorter rows or a shorter system prompt.")
        with torch.inference_mode():
            _, cache = bridge.run_with_cache(batch.tokens.to(device), names_filter=names, stop_at_layer=stop)
            for h in names:
                out[h].append(batch.align(cache[h], part.tokens.shape[1]).cpu())
        del cache
    width = inputs.tokens.shape[1]
    return {h: torch.cat([torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in ts]) for h, ts in out.items()}


__all__ = ["prompted_activations"]
