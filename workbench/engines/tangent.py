"""Hand-written forward-mode pass of the organism's functional model: the loss tangents
d/ds L_{i,t}(theta + s d) for a whole batch, without `torch.func`.

Why: alignment scores are one directional derivative per batch, and `torch.func.jvp` through
the functional model costs ~2.2 plain forward passes on a CPU, most of it in separate thin
matmuls, copies and dispatch. Here each linear map computes dx W^T + db and accumulates x dW^T
into it in place, attention and LayerNorm use their closed-form tangents (gelu's comes from the
fused `gelu_backward` kernel), the last block and the unembedding run only at counted positions, and the loss tangent
is `sum_v (p_v - q_v) dl_v` (q = the target distribution: one-hot for the hard loss, the
teacher's for the soft one), which never needs the loss itself. Exactness against
`torch.func.jvp` is tested in float64; `python -m workbench.bench gradients` measures both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.errors import ConfigError, DataError

Weights = Mapping[str, Tensor]
Dual = tuple[Tensor, Tensor]  # (value, tangent)


def linear(x: Dual, w: Weights, dw: Weights, name: str) -> Dual:
    """y = x W^T + b and dy = dx W^T + x dW^T + db (the x dW^T term added in place: no copy of [x, dx])."""
    v, t = x
    weight, bias = w[f"{name}.weight"], w.get(f"{name}.bias")
    d_weight, d_bias = dw.get(f"{name}.weight"), dw.get(f"{name}.bias")
    y = F.linear(v, weight, bias)
    dy = F.linear(t, weight, d_bias)
    if d_weight is not None:
        dy.flatten(0, -2).addmm_(v.flatten(0, -2), d_weight.T)
    return y, dy


def layer_norm(x: Dual, w: Weights, dw: Weights, name: str, eps: float) -> Dual:
    """LayerNorm with affine weight/bias; tangent of the normalised value is
    rstd * (dx - mean(dx) - xh * mean(xh * dx))."""
    v, t = x
    xh, _, rstd = torch.native_layer_norm(v, v.shape[-1:], None, None, eps)  # fused; rstd kept for the tangent
    dxh = rstd * (t - t.mean(-1, keepdim=True) - xh * (xh * t).mean(-1, keepdim=True))
    gamma, beta = w[f"{name}.weight"], w[f"{name}.bias"]
    y = torch.addcmul(beta, xh, gamma)
    dy = dxh * gamma
    if (dg := dw.get(f"{name}.weight")) is not None:
        dy = dy + xh * dg
    if (db := dw.get(f"{name}.bias")) is not None:
        dy = dy + db
    return y, dy


def activation(x: Dual, act: str) -> Dual:
    """gelu (erf), gelu_new (tanh approximation) or relu; the tangent act'(x) dx comes from the
    fused `gelu_backward` kernel (it computes exactly grad_out * act'(x))."""
    v, t = x
    if act in ("gelu", "gelu_new"):
        approximate = "none" if act == "gelu" else "tanh"
        return F.gelu(v, approximate=approximate), torch.ops.aten.gelu_backward(t, v, approximate=approximate)
    if act == "relu":
        on = v > 0
        return v * on, t * on
    raise ConfigError(f"No tangent rule for act_fn={act!r}; supported: gelu, gelu_new, relu.")


def attention(
    q: Dual, k: Dual, v: Dual, query_pos: Int[Tensor, " tq"]
) -> Dual:
    """Causal softmax attention of queries at absolute positions `query_pos` over every key, with
    tangents ds = (dq k^T + q dk^T) / sqrt(d), dp = p (ds - sum p ds), dz = dp v + p dv."""
    (qv, qt), (kv, kt), (vv, vt) = q, k, v
    scale = 1.0 / math.sqrt(qv.shape[-1])
    n_keys = kv.shape[-2]
    masked = torch.arange(n_keys, device=qv.device)[None, :] > query_pos[:, None]
    scores = torch.matmul(qv, kv.transpose(-1, -2)) * scale
    scores = scores.masked_fill(masked, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    ds = torch.matmul(qt, kv.transpose(-1, -2)).add_(torch.matmul(qv, kt.transpose(-1, -2))).mul_(scale)
    dp = p * (ds - (p * ds).sum(-1, keepdim=True))
    z = torch.matmul(p, vv)
    dz = torch.matmul(dp, vv).add_(torch.matmul(p, vt))
    return z, dz


def _heads(x: Dual, n_heads: int) -> Dual:
    return tuple(einops.rearrange(a, "b t (h d) -> b h t d", h=n_heads) for a in x)  # type: ignore[return-value]


def _merge(x: Dual) -> Dual:
    return tuple(einops.rearrange(a, "b h t d -> b t (h d)") for a in x)  # type: ignore[return-value]


def _add(a: Dual, b: Dual) -> Dual:
    return a[0] + b[0], a[1] + b[1]


def _take(x: Dual, cols: Tensor) -> Dual:
    return x[0].index_select(1, cols), x[1].index_select(1, cols)


def logit_tangents(
    w: Weights,
    dw: Weights,
    tokens: Int[Tensor, "batch seq"],
    cols: Int[Tensor, " c"],
    *,
    n_layers: int,
    n_heads: int,
    eps: float,
    act: str,
) -> tuple[Float[Tensor, "batch c vocab"], Float[Tensor, "batch c vocab"]]:
    """Logits and their tangent along `dw` at sequence positions `cols` (sorted). Keys missing from
    `dw` have zero tangent. Earlier blocks run at every position up to the last column (keys and
    values need them); the last block's queries, MLP and the unembedding only at `cols`."""
    seq = int(cols.max()) + 1
    tokens = tokens[:, :seq]
    positions = torch.arange(seq, device=tokens.device)
    x_v = w["embed.weight"][tokens] + w["pos_embed.weight"][:seq]
    x_t = torch.zeros_like(x_v)
    if (d_embed := dw.get("embed.weight")) is not None:
        x_t = x_t + d_embed[tokens]
    if (d_pos := dw.get("pos_embed.weight")) is not None:
        x_t = x_t + d_pos[:seq]
    x: Dual = (x_v, x_t)
    for layer in range(n_layers):
        p = f"blocks.{layer}"
        last = layer == n_layers - 1
        h = layer_norm(x, w, dw, f"{p}.ln1", eps)
        k = _heads(linear(h, w, dw, f"{p}.attn.k"), n_heads)
        v = _heads(linear(h, w, dw, f"{p}.attn.v"), n_heads)
        if last:
            h, x, query_pos = _take(h, cols), _take(x, cols), cols
        else:
            query_pos = positions
        q = _heads(linear(h, w, dw, f"{p}.attn.q"), n_heads)
        z = _merge(attention(q, k, v, query_pos))
        x = _add(x, linear(z, w, dw, f"{p}.attn.o"))
        h = layer_norm(x, w, dw, f"{p}.ln2", eps)
        x = _add(x, linear(activation(linear(h, w, dw, f"{p}.mlp.in"), act), w, dw, f"{p}.mlp.out"))
    if n_layers == 0:
        x = _take(x, cols)
    return linear(layer_norm(x, w, dw, "ln_final", eps), w, dw, "unembed")


def written_index(
    tokens: Int[Tensor, "batch seq"], ids: Int[Tensor, " k"], mask: Tensor | None = None
) -> Int[Tensor, "batch seq_1"]:
    """Index in `ids` of each written next token (-1 outside `ids`); a DataError where a token
    outside `ids` is counted by `mask` (the renormalised hard loss is undefined there)."""
    ids = ids.to(tokens.device)
    index = torch.full((max(int(ids.max()), int(tokens.max())) + 1,), -1, dtype=torch.long, device=tokens.device)
    index[ids] = torch.arange(len(ids), device=tokens.device)
    written = index[tokens[:, 1:]]
    if mask is not None and bool(((written < 0) & mask.ne(0)).any()):
        raise DataError("A counted written token lies outside the renormalisation ids; filter the data to that set.")
    return written


def loss_tangents(
    w: Weights,
    dw: Weights,
    tokens: Int[Tensor, "batch seq"],
    mask: Float[Tensor, "batch seq_1"],
    target_dist: Tensor | None,
    ids: Int[Tensor, " k"] | None,
    *,
    n_layers: int,
    n_heads: int,
    eps: float,
    act: str,
    written: Int[Tensor, "batch seq_1"] | None = None,
) -> Float[Tensor, "batch seq_1"]:
    """d/ds L_{i,t}(w + s dw) at s = 0, zero where `mask` is zero. The loss at position t is the
    cross-entropy of a target distribution q against softmax(logits_t) over `ids` (all tokens
    when None); its tangent is sum_v (p_v - q_v) dl_v. `target_dist`: soft targets as log-probs
    [batch, seq-1, k]; None for the hard loss, whose q is one-hot at the written token.
    `written`: hard loss with `ids` only, the written tokens' index in `ids` when already known
    (`written_index`, as `Objective.targets` gives it); computed from `tokens` when None."""
    counted = mask.ne(0).any(0).nonzero().flatten()
    dtype = torch.promote_types(w["embed.weight"].dtype, torch.float32)
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    if counted.numel() == 0:
        return out
    logits, d_logits = logit_tangents(w, dw, tokens, counted, n_layers=n_layers, n_heads=n_heads, eps=eps, act=act)
    if ids is not None:
        logits, d_logits = logits.index_select(-1, ids), d_logits.index_select(-1, ids)
    p = torch.softmax(logits.to(dtype), dim=-1)
    if target_dist is None:
        if ids is None:
            written = tokens[:, 1:]
        elif written is None:
            written = written_index(tokens, ids, mask)
        written = written.index_select(1, counted).clamp(min=0)  # outside ids only where not counted
        p = p.scatter_add(-1, written[..., None], torch.full_like(written[..., None], -1.0, dtype=dtype))
    else:
        p = p - target_dist.index_select(1, counted).to(dtype).exp()
    tangent = (p * d_logits.to(dtype)).sum(-1)
    out[:, counted] = tangent * mask.index_select(1, counted).to(dtype)
    return out


__all__ = ["logit_tangents", "loss_tangents", "written_index", "linear", "layer_norm", "activation", "attention"]
