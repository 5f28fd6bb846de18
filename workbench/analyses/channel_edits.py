"""The edits the channel tests make to distillation data, each beside the random edit of the
same size it is judged against. Pure functions of token tensors and seeds (exact and testable).

- `divergence_positions`: the positions where the teacher's next-token choice (argmax over the
  channel) differs from the base's and any other reference's (Schrodi et al.'s divergence
  tokens); `kl_positions` the top share by KL(teacher || base); `random_positions_like` draws as
  many positions per row at random among the same allowed ones (`predicting`: those predicting a number).
- `shuffle_within_rows`: permute the trained tokens inside each row (token counts kept,
  order broken): how much of the transfer is a token-frequency effect.
- `entangled_tokens` ranks tokens by how much more often the teacher wrote them than the base
  (add-one smoothed log frequency ratio, Zur et al.); `replace_tokens` swaps every occurrence
  of a set for tokens outside it, and `replace_random_like` swaps as many other occurrences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.core.errors import ConfigError, DataError

LogitsFn = Callable[[Int[Tensor, "batch seq"]], Float[Tensor, "batch seq vocab"]]


def model_device(model: Callable) -> torch.device:
    """Where a model's parameters live (CPU for a parameterless callable)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_mask(mask: Tensor, tokens: Tensor, name: str) -> None:
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape):
        raise DataError(f"{name} must be a bool mask shaped like the tokens {tuple(tokens.shape)}; got "
                        f"{mask.dtype} {tuple(mask.shape)}.")


@torch.inference_mode()
def channel_argmax(model: LogitsFn, tokens: Int[Tensor, "n seq"], channel_ids: Sequence[int] | None,
                   batch_size: int = 256) -> Int[Tensor, "n seq"]:
    """The model's next-token choice at every position, among `channel_ids` (all tokens when None)."""
    ids = None if channel_ids is None else torch.as_tensor(list(channel_ids), dtype=torch.long)
    out = []
    device = model_device(model)
    for lo in range(0, len(tokens), batch_size):
        logits = model(tokens[lo: lo + batch_size].to(device))
        logits = logits.float().cpu()
        if ids is None:
            out.append(logits.argmax(-1))
        else:
            out.append(ids[logits[..., ids].argmax(-1)])
    return torch.cat(out) if out else torch.zeros_like(tokens.cpu())


def divergence_positions(base: LogitsFn, teacher: LogitsFn, tokens: Int[Tensor, "n seq"],
                         allowed: Bool[Tensor, "n seq"], channel_ids: Sequence[int] | None = None,
                         others: Sequence[LogitsFn] = (), batch_size: int = 256) -> Bool[Tensor, "n seq"]:
    """`allowed` positions (position t predicts token t+1) where the teacher's argmax over the
    channel differs from the base's and from every model in `others` (e.g. a teacher of another
    target): where only this teacher would write what it writes (Schrodi et al.'s divergence
    tokens). Returned on the CPU, as the tokens' rows."""
    _check_mask(allowed, tokens, "allowed")
    choice = channel_argmax(teacher, tokens, channel_ids, batch_size)
    differs = allowed.cpu().clone()
    for ref in (base, *others):
        differs &= channel_argmax(ref, tokens, channel_ids, batch_size) != choice
    return differs


@torch.inference_mode()
def kl_positions(base: LogitsFn, teacher: LogitsFn, tokens: Int[Tensor, "n seq"], allowed: Bool[Tensor, "n seq"],
                 channel_ids: Sequence[int] | None, fraction: float, batch_size: int = 256) -> Bool[Tensor, "n seq"]:
    """The top `fraction` of the `allowed` positions by KL(teacher || base) of the next-token
    distributions over the channel: where the teacher's distribution departs most from the base's
    (a graded divergence for high-entropy outputs, where argmaxes flip on noise)."""
    _check_mask(allowed, tokens, "allowed")
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction={fraction}: keep a share of the positions in (0, 1).")
    ids = None if channel_ids is None else torch.as_tensor(list(channel_ids), dtype=torch.long)
    kl = []
    for lo in range(0, len(tokens), batch_size):
        lp = []
        for model in (teacher, base):
            logits = model(tokens[lo: lo + batch_size].to(model_device(model))).float().cpu()
            lp.append(torch.log_softmax(logits if ids is None else logits[..., ids], -1))
        kl.append((lp[0].exp() * (lp[0] - lp[1])).sum(-1))
    kl_all = torch.cat(kl)
    allowed = allowed.cpu()
    k = round(fraction * int(allowed.sum()))
    out = torch.zeros_like(allowed)
    if k:
        flat = torch.where(allowed, kl_all, torch.full_like(kl_all, -float("inf"))).flatten()
        out.view(-1)[torch.topk(flat, k).indices] = True
    return out


def random_positions_like(mask: Bool[Tensor, "n seq"], allowed: Bool[Tensor, "n seq"], seed: int) -> Bool[Tensor, "n seq"]:
    """Per row, as many positions as `mask` sets, drawn uniformly without replacement among the
    row's `allowed` positions (the random control of a position mask; `mask` must lie in `allowed`)."""
    _check_mask(allowed, mask, "allowed")
    if bool((mask & ~allowed).any()):
        raise DataError("The mask sets positions outside `allowed`; draw the control among a superset of the mask.")
    gen = _generator(seed)
    out = torch.zeros_like(mask)
    keys = torch.rand(mask.shape, generator=gen)
    keys[~allowed] = float("inf")  # never picked
    order = keys.argsort(dim=1)
    counts = mask.sum(1)
    for i in torch.nonzero(counts).flatten().tolist():
        out[i, order[i, : int(counts[i])]] = True
    return out


def trained_tokens(tokens: Int[Tensor, "n seq"], supervised: Bool[Tensor, "n seq"],
                   movable_ids: Sequence[int]) -> Bool[Tensor, "n seq"]:
    """Positions of tokens the loss is trained to predict (position t-1 supervised) whose id is in
    `movable_ids` (e.g. the numbers, not the separators): what the token edits may change."""
    _check_mask(supervised, tokens, "supervised")
    predicted = torch.zeros_like(supervised)
    predicted[:, 1:] = supervised[:, :-1]
    return predicted & torch.isin(tokens, torch.as_tensor(list(movable_ids), dtype=tokens.dtype))


def predicting(tokens: Int[Tensor, "n seq"], supervised: Bool[Tensor, "n seq"],
               movable_ids: Sequence[int]) -> Bool[Tensor, "n seq"]:
    """Supervised positions whose next token is in `movable_ids` (the positions that predict a
    number): where divergence masks and their random controls are drawn, so both remove as much
    real supervision (separator positions carry almost none)."""
    _check_mask(supervised, tokens, "supervised")
    out = torch.zeros_like(supervised)
    out[:, :-1] = supervised[:, :-1] & torch.isin(tokens[:, 1:], torch.as_tensor(list(movable_ids), dtype=tokens.dtype))
    return out


def shuffle_within_rows(tokens: Int[Tensor, "n seq"], movable: Bool[Tensor, "n seq"], seed: int) -> Int[Tensor, "n seq"]:
    """Each row with the tokens at its `movable` positions permuted among those positions
    (a uniform permutation per row): every row keeps its token counts, not its order."""
    _check_mask(movable, tokens, "movable")
    gen = _generator(seed)
    out = tokens.clone()
    for i in range(len(tokens)):
        where = torch.nonzero(movable[i]).flatten()
        if len(where) > 1:
            out[i, where] = tokens[i, where[torch.randperm(len(where), generator=gen)]]
    return out


def token_counts(tokens: Int[Tensor, "n seq"], where: Bool[Tensor, "n seq"], ids: Sequence[int]) -> Int[Tensor, " k"]:
    """How often each of `ids` occurs at the `where` positions."""
    _check_mask(where, tokens, "where")
    ids_t = torch.as_tensor(list(ids), dtype=torch.long)
    counts = torch.bincount(tokens[where].long(), minlength=int(max(ids_t.max().item(), tokens.max().item())) + 1)
    return counts[ids_t]


def entangled_tokens(teacher_tokens: Int[Tensor, "n seq"], teacher_where: Bool[Tensor, "n seq"],
                     base_tokens: Int[Tensor, "m seq2"], base_where: Bool[Tensor, "m seq2"],
                     ids: Sequence[int]) -> Float[Tensor, " k"]:
    """Per token of `ids`: log of its add-one smoothed frequency in the teacher's rows over its
    frequency in the base's rows (> 0: the teacher writes it more often)."""
    if len(ids) == 0:
        raise ConfigError("entangled_tokens needs at least one candidate token id.")
    t = token_counts(teacher_tokens, teacher_where, ids).double() + 1
    b = token_counts(base_tokens, base_where, ids).double() + 1
    return (t / t.sum()).log() - (b / b.sum()).log()


def replace_tokens(tokens: Int[Tensor, "n seq"], where: Bool[Tensor, "n seq"], which: Sequence[int],
                   replacements: Sequence[int], seed: int) -> tuple[Int[Tensor, "n seq"], Bool[Tensor, "n seq"]]:
    """Every occurrence of a `which` token at the `where` positions replaced by a uniform draw from
    `replacements` (which must not meet `which`); returns the new tokens and the positions changed."""
    _check_mask(where, tokens, "where")
    which_t = torch.as_tensor(list(which), dtype=tokens.dtype)
    repl = torch.as_tensor(list(replacements), dtype=tokens.dtype)
    if len(repl) == 0:
        raise ConfigError("replace_tokens needs at least one replacement token id.")
    if bool(torch.isin(repl, which_t).any()):
        raise ConfigError("The replacement tokens include tokens being replaced; draw replacements outside the set.")
    hit = where & torch.isin(tokens, which_t)
    return _draw_into(tokens, hit, repl, seed), hit


def replace_random_like(tokens: Int[Tensor, "n seq"], where: Bool[Tensor, "n seq"], changed: Bool[Tensor, "n seq"],
                        protected: Sequence[int], replacements: Sequence[int], seed: int
                        ) -> tuple[Int[Tensor, "n seq"], Bool[Tensor, "n seq"]]:
    """The control of `replace_tokens`: per row, as many positions as `changed` sets, drawn at
    random among the `where` positions whose token is not `protected` (a row with fewer such
    positions gives all it has), each replaced by a uniform draw from `replacements`."""
    allowed = where & ~torch.isin(tokens, torch.as_tensor(list(protected), dtype=tokens.dtype))
    wanted = changed.sum(1)
    capped = torch.zeros_like(changed)
    for i in torch.nonzero(wanted).flatten().tolist():  # cap each row's count at what it allows
        k = min(int(wanted[i]), int(allowed[i].sum()))
        capped[i, torch.nonzero(allowed[i]).flatten()[:k]] = True
    hit = random_positions_like(capped, allowed, seed)
    return _draw_into(tokens, hit, torch.as_tensor(list(replacements), dtype=tokens.dtype), seed + 1), hit


def _draw_into(tokens: Tensor, hit: Tensor, replacements: Tensor, seed: int) -> Tensor:
    """`tokens` with each `hit` position set to a uniform draw from `replacements` other than the
    token already there (so every hit position changes: the edit's size is what it says)."""
    out = tokens.clone()
    gen = _generator(seed)
    todo = hit.clone()
    for _ in range(100):
        n = int(todo.sum())
        if n == 0:
            break
        out[todo] = replacements[torch.randint(len(replacements), (n,), generator=gen)]
        todo &= out == tokens
    if bool(todo.any()):
        raise ConfigError("Could not draw a different replacement token; give more than one replacement id.")
    return out


__all__ = ["channel_argmax", "divergence_positions", "entangled_tokens", "kl_positions", "predicting", "random_positions_like",
           "replace_random_like", "replace_tokens", "shuffle_within_rows", "token_counts", "trained_tokens"]
