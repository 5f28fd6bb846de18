"""The logit lens on activation shifts: which tokens a shift promotes, read through the parent's
final norm and unembedding.

LayerNorm is not linear; the view linearises it at the parent's scale,
LN(a + v) - LN(a) ~= gamma * (v - mean(v)) / sigma, with sigma the parent's mean scale at that
hook (`parent_scales`) and the (small) change of sigma itself ignored. It reads a direction, not
the exact logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.capture.store import ActivationStore
from workbench.core.lineage import Lineage


def final_readout(lineage: Lineage, model: str) -> tuple[Tensor, Tensor, bool] | None:
    """(gamma [d], W_U [vocab, d], centred) of a model's final norm and unembedding, or None."""
    sd = lineage[model].state_dict()
    if "unembed.weight" not in sd:
        return None
    w_u = sd["unembed.weight"].detach().float().cpu()
    d = w_u.shape[1]
    gamma = sd.get("ln_final.weight")
    gamma = torch.ones(d) if gamma is None else gamma.detach().float().cpu()
    centred = str(getattr(lineage.cfg, "normalization_type", "LN")).upper().startswith("LN")
    return gamma, w_u, centred


def logit_lens(shift: Float[Tensor, " d"], gamma: Float[Tensor, " d"], w_u: Float[Tensor, "vocab d"],
               scale: float, centred: bool = True) -> Float[Tensor, " vocab"]:
    """Change of logits a residual shift causes through the final norm linearised at `scale`
    (LayerNorm is not linear: this ignores the change of the norm's scale itself), centred over
    the vocabulary (a constant logit shift changes nothing)."""
    v = shift - shift.mean() if centred else shift
    delta = w_u @ (gamma * v / scale)
    return delta - delta.mean()


def parent_scales(lineage: Lineage, store: ActivationStore, hooks: Sequence[str], parents: set[str],
                  max_rows: int = 512, batch_size: int = 64) -> dict[tuple[str, str], float]:
    """(parent, hook) -> mean LayerNorm scale sqrt(var + eps) of the parent's activations over the
    positions the store's rule uses (per position, as the final norm would see them), on the first
    `max_rows` rows. The logit lens linearises the final norm at this scale."""
    inputs = store.inputs.select(slice(0, min(max_rows, store.n_rows)))
    eps = float(getattr(lineage.cfg, "eps", 1e-5))
    totals: dict[tuple[str, str], float] = {}
    count = 0.0
    for start in range(0, len(inputs), batch_size):
        batch = inputs.select(slice(start, start + batch_size))
        rule = store.positions
        if rule == "last":
            use = torch.zeros_like(batch.mask)
            use[torch.arange(len(batch)), batch.lengths - 1] = True
        elif isinstance(rule, list):
            use = torch.zeros_like(batch.mask)
            use[:, rule] = True
        else:
            use = batch.mask
        count += float(use.sum())
        for parent in parents:
            with torch.inference_mode():
                _, cache = lineage[parent].run_with_cache(batch.tokens.to(lineage.device), names_filter=list(hooks))
            for hook in hooks:
                a = cache[hook].float().cpu()
                if a.ndim != 3:
                    continue
                sigma = a.var(dim=-1, unbiased=False).add(eps).sqrt()
                totals[(parent, hook)] = totals.get((parent, hook), 0.0) + float(sigma[use].sum())
    return {k: v / max(count, 1.0) for k, v in totals.items()}


def lens_entry(v: Tensor, readout: tuple[Tensor, Tensor, bool] | None, scale: float, tok: Any,
                target_id: int | None, top_k: int) -> dict[str, Any]:
    """One shift's logit-lens view: its top tokens and the target's change and rank; {} when the
    hook is not in the residual stream or no unembedding is known."""
    if readout is None or readout[1].shape[1] != v.numel():
        return {}  # not a residual-stream hook, or no unembedding known
    gamma, w_u, centred = readout
    delta = logit_lens(v, gamma, w_u, scale, centred)
    top = torch.topk(delta, min(top_k, delta.numel()))
    ids = top.indices.tolist()
    entry: dict[str, Any] = {
        "top_ids": ids,
        "top_tokens": [tok.decode([i]) if tok is not None else str(i) for i in ids],
        "top_delta": [float(x) for x in top.values],
    }
    if target_id is not None:
        entry["target_delta"] = float(delta[target_id])
        entry["target_rank"] = int((delta > delta[target_id]).sum()) + 1
    return entry
