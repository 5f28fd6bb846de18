"""Multi-token answers of a `Trait`: teacher-forced log-probabilities of surface forms, and a
sampled rate by generation.

P(answer | prompt) = sum over the answer's surface forms f of prod_j P(f_j | prompt, f_<j): each
prompt x form row is `prompt + f[:-1]`, right-padded (a causal model's logits at a position do
not depend on the padding after it), and the logits at positions len(prompt)-1 ... read f's
tokens. The model is a logits callable (token ids -> logits), so generation re-runs the whole
sequence at every step: the callable exposes no KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from workbench.trait import LogitsFn, Trait

Form = Sequence[int]


def _form_log_probs(model: LogitsFn, rows: list[tuple[Form, Form]], pad_id: int, device: torch.device | str,
                    batch_size: int) -> Float[Tensor, " rows"]:
    """log P(form | prompt) of every (prompt, form) row, `batch_size` rows per forward."""
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start: start + batch_size]
        width = max(len(p) + len(f) - 1 for p, f in chunk)
        tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        r_idx, pos, tok = [], [], []
        for r, (p, f) in enumerate(chunk):
            seq = [*p, *f[:-1]]
            tokens[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            for j, t in enumerate(f):
                r_idx.append(r)
                pos.append(len(p) - 1 + j)
                tok.append(t)
        r_t, pos_t, tok_t = (torch.tensor(x, device=device) for x in (r_idx, pos, tok))
        logits = model(tokens.to(device))
        if tok_t.max() >= logits.shape[-1]:
            from workbench.core.errors import DataError

            raise DataError(f"Answer token id {int(tok_t.max())} is outside the model's vocabulary "
                            f"(0..{logits.shape[-1] - 1}). Build the Trait with the models' tokenizer.")
        sel = logits[r_t, pos_t]
        lp = F.log_softmax(sel.to(torch.promote_types(sel.dtype, torch.float32)), dim=-1)
        lp = lp.gather(1, tok_t[:, None])[:, 0]
        out.append(torch.zeros(len(chunk), dtype=lp.dtype, device=lp.device).index_add(0, r_t, lp))
    return torch.cat(out)


def answer_log_probs(model: LogitsFn, prompts: Sequence[Form], forms: Sequence[Sequence[Form]], pad_id: int,
                     device: torch.device | str = "cpu", batch_size: int = 256) -> Float[Tensor, "prompts answers"]:
    """log P(answer | prompt) for every prompt and answer (`forms[a]`: answer a's surface forms):
    the log of the sum over its forms of the teacher-forced product; differentiable."""
    rows, where = [], []
    for i, p in enumerate(prompts):
        for a, answer_forms in enumerate(forms):
            for k, f in enumerate(answer_forms):
                rows.append((p, f))
                where.append((i, a, k))
    lp = _form_log_probs(model, rows, pad_id, device, batch_size)
    i, a, k = (torch.tensor(x, device=lp.device) for x in zip(*where))
    grid = torch.full((len(prompts), len(forms), max(map(len, forms))), float("-inf"), dtype=lp.dtype,
                      device=lp.device)
    return grid.index_put((i, a, k), lp).logsumexp(-1)


@torch.inference_mode()
def sample_continuations(model: LogitsFn, prompt: Form, n: int, steps: int, pad_id: int,
                         gen: torch.Generator, device: torch.device | str = "cpu",
                         batch_size: int = 256) -> Int[Tensor, "n steps"]:
    """`n` continuations of `prompt`, `steps` tokens each, sampled at temperature 1 (a plain
    re-forward loop: the logits callable has no KV cache)."""
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        tokens = torch.full((b, len(prompt) + steps - 1), pad_id, dtype=torch.long)
        tokens[:, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        drawn = torch.empty((b, steps), dtype=torch.long)
        for s in range(steps):
            cur = len(prompt) + s
            logits = model(tokens[:, :cur].to(device))[:, cur - 1]
            probs = torch.softmax(logits.double(), dim=-1).cpu()
            drawn[:, s] = torch.multinomial(probs, 1, generator=gen)[:, 0]
            if s + 1 < steps:
                tokens[:, cur] = drawn[:, s]
        out.append(drawn)
    return torch.cat(out)


def match_answer(continuation: Sequence[int], forms: dict[str, tuple[tuple[int, ...], ...]]) -> str | None:
    """The answer whose surface form is the longest prefix of `continuation` (None if none is)."""
    best, best_len = None, 0
    cont = tuple(continuation)
    for name, answer_forms in forms.items():
        for f in answer_forms:
            if len(f) > best_len and cont[: len(f)] == f:
                best, best_len = name, len(f)
    return best


def sampled_hits(model: LogitsFn, trait: Trait, n_samples: int, seed: int = 0, batch_size: int = 256) -> int:
    """How many of `n_samples` sampled continuations per prompt name the target: at the token level,
    the longest surface form of any answer that starts the continuation is the target's."""
    from workbench.trait import _device_of

    forms = trait.forms
    steps = max(len(f) for fs in forms.values() for f in fs)
    gen = torch.Generator().manual_seed(seed)
    hits = 0
    for prompt in trait.prompts:
        draws = sample_continuations(model, prompt, n_samples, steps, trait.pad_id, gen, _device_of(model), batch_size)
        hits += sum(match_answer(row, forms) == trait.target for row in draws.tolist())
    return hits
