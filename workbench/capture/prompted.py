"""Activations of a prompted role (the base under a system prompt) on the rows' own tokens.

The base runs on each row with its base prefix swapped for the teacher's (or the teacher prefix
prepended; `workbench.core.prompted`), and the activations are moved back to the row's positions,
so that at every position from the last base-prefix token on they compare one to one with another
model's activations on the row itself (positions inside a replaced prefix are zeros). Same hooks
and names as `capture`; the base's bridge is used, never a copy.

`capture` (and so `ActivationReader` and every analysis reading a store: compare, probes,
directions) reads a prompted role through `prompted_cache`, exactly as it reads a model:
`readable(lineage, name)` says whether a name is either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from transformer_lens.model_bridge import TransformerBridge

from workbench.capture.hooks import resolve_hooks, run_cached, stop_layer
from workbench.core.errors import ConfigError, DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.prompted import PromptedRole


def readable(lineage: Lineage, name: str) -> bool:
    """Whether `name`'s activations can be read: a model of the lineage, or a prompted role."""
    return name in lineage or lineage.is_prompted(name)


def bridge_of(lineage: Lineage, name: str) -> TransformerBridge:
    """The bridge that runs `name`: its own, or its base's for a prompted role."""
    return lineage[lineage.prompted[name].base] if lineage.is_prompted(name) else lineage[name]


def check_hooks(names: Sequence[str]) -> None:
    """Refuse per-pair hooks for a prompted role (their key axis would include the system prompt)."""
    per_pair = [h for h in names if h.endswith(("hook_pattern", "hook_attn_scores"))]
    if per_pair:
        raise ConfigError(f"Hook {per_pair[0]!r} is [batch, head, query, key]: its key positions would include the "
                          "system prompt's. Read hooks whose second dimension is the position (resid, attn_out, mlp_out, z).")


def prompted_cache(
    bridge: TransformerBridge, role: PromptedRole, tokens: Tensor, pad_id: int, names: Sequence[str],
    stop: int | None, n_ctx: int, counted: Tensor | None = None, dry_run: bool = False,
) -> dict[str, Tensor]:
    """hook -> [batch, seq, ...] activations of `role` on right-padded `tokens` (on the bridge's
    device): the base run on the system-prompted rows, moved back to the rows' positions (zeros
    inside a swapped base prefix). `counted` [batch, seq]: positions a reduction will read; one
    inside a swapped base prefix (no teacher counterpart) is refused. `dry_run`: only these
    checks (no forward; `bridge` may be None)."""
    batch = role.prefix.inputs(tokens.cpu(), pad_id=pad_id)
    if batch.tokens.shape[1] > n_ctx:
        raise DataError(f"With the system prompt the rows are {batch.tokens.shape[1]} tokens, longer than the "
                        f"context ({n_ctx}). Use shorter rows or a shorter system prompt.")
    if counted is not None:
        t = torch.arange(counted.shape[1])[None, :]
        bad = counted.cpu().bool() & (t < batch.first_defined[:, None])
        if bad.any():
            row, pos = (int(v) for v in bad.nonzero()[0])
            raise DataError(f"Row {row} reads position {pos} of prompted {role.name!r}, inside the base prefix its system "
                            "prompt replaces (no counterpart there). Read the completion (positions 'continuation') "
                            "or the last token.")
    if dry_run:
        return {}
    cache = run_cached(bridge, batch.tokens.to(tokens.device), list(names), stop)
    return {h: batch.align(cache[h], tokens.shape[1]) for h in names}


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
    check_hooks(names)
    stop = stop_layer(names, lineage.cfg.n_layers)
    out: dict[str, list[Tensor]] = {h: [] for h in names}
    for part in inputs.batches(batch_size):
        with torch.inference_mode():
            cache = prompted_cache(bridge, role, part.tokens.to(lineage.device), part.pad_id, names, stop, lineage.n_ctx)
            for h in names:
                out[h].append(cache[h].cpu())
        del cache
    width = inputs.tokens.shape[1]
    return {h: torch.cat([torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in ts]) for h, ts in out.items()}


__all__ = ["bridge_of", "check_hooks", "prompted_activations", "prompted_cache", "readable"]
