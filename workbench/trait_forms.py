"""Multi-token answers of a `Trait`: teacher-forced log-probabilities of surface forms, and a
sampled rate by generation.

P(answer | prompt) = sum over the answer's surface forms f of prod_j P(f_j | prompt, f_<j). Form
f reads its tokens at positions len(prompt)-1 ... of a row that starts `prompt + f[:-1]`; a causal
model's logits at a position do not depend on what follows it, so one row serves every form whose
`f[:-1]` is a prefix of the row's continuation. Per prompt, the forms' `f[:-1]` make a trie and one
row `prompt + path` per maximal path (leaf) scores them all (the fewest rows that can: no row
holds two leaves). Each context (prompt + a form's first j tokens) gets one log-softmax, read at
the first row along it: every single-token form of every answer is read at the prompt's last
position of its first row (one row when all forms are single tokens). Rows are right-padded. The
model is a logits callable (token ids -> logits, no KV cache), so rows are the only thing shared;
generation re-runs the sequence at every step, forwarding each distinct prefix once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from workbench.trait import LogitsFn, Trait

Form = Sequence[int]


@dataclass(frozen=True)
class FormRows:
    """How the forms of every prompt are scored: the rows to run and where each token is read.

    rows: (prompt index, tokens appended to the prompt) per row, prompt-major.
    reads: (row, position) of every distinct next-token distribution read, sorted.
    tokens: (read index, token id, output index) per token of every form after every prompt,
        sorted; output index = prompt * n_forms + form.
    answer_of: the answer of each form (forms flattened over answers in order).
    """

    prompts: tuple[tuple[int, ...], ...]
    rows: tuple[tuple[int, tuple[int, ...]], ...]
    reads: tuple[tuple[int, int], ...]
    tokens: tuple[tuple[int, int, int], ...]
    answer_of: tuple[int, ...]
    n_answers: int

    @property
    def n_forms(self) -> int:
        return len(self.answer_of)


def _leaves(contexts: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The maximal paths of the trie of `contexts`: those that are no other context's proper prefix
    (distinct, in first-seen order)."""
    prefixes = {c[:k] for c in contexts for k in range(len(c))}
    return [c for c in dict.fromkeys(contexts) if c not in prefixes]


def form_rows(prompts: Sequence[Form], forms: Sequence[Sequence[Form]], share: bool = True) -> FormRows:
    """The rows scoring every form of `forms[a]` (answer a's surface forms) after every prompt:
    one row per leaf of each prompt's trie of `f[:-1]`, each token read at the first row along its
    context (share=True); or one row `prompt + f[:-1]` per prompt x form (share=False: the naive
    layout, for reference and benchmarks)."""
    flat = [tuple(int(t) for t in f) for fs in forms for f in fs]
    ps = tuple(tuple(int(t) for t in p) for p in prompts)
    if share:
        paths = _leaves([f[:-1] for f in flat])
        cover: dict[tuple[int, ...], int] = {}  # context -> the first row along it
        for r, path in enumerate(paths):
            for k in range(len(path) + 1):
                cover.setdefault(path[:k], r)
    else:
        paths = [f[:-1] for f in flat]
    rows: list[tuple[int, tuple[int, ...]]] = []
    read_at: dict[tuple[int, int], None] = {}
    toks = []
    for i, p in enumerate(ps):
        base = len(rows)
        rows += [(i, path) for path in paths]
        for k, f in enumerate(flat):
            for j, t in enumerate(f):
                key = (base + (cover[f[:j]] if share else k), len(p) - 1 + j)
                read_at[key] = None
                toks.append((key, t, i * len(flat) + k))
    reads = sorted(read_at)  # by row, then position: a batch of rows holds a contiguous run
    index = {key: n for n, key in enumerate(reads)}
    tokens = tuple(sorted((index[key], t, o) for key, t, o in toks))
    answer_of = tuple(a for a, fs in enumerate(forms) for _ in fs)
    return FormRows(ps, tuple(rows), tuple(reads), tokens, answer_of, len(forms))


def form_log_probs(model: LogitsFn, plan: FormRows, pad_id: int, device: torch.device | str,
                   batch_size: int) -> Float[Tensor, "prompts forms"]:
    """log P(form | prompt) of every prompt and form of `plan`, `batch_size` rows per forward
    (right-padded with `pad_id`); differentiable."""
    from workbench.core.errors import DataError

    read_row = [r for r, _ in plan.reads]
    tok_read = [q for q, _, _ in plan.tokens]
    parts, where = [], []
    for start in range(0, len(plan.rows), batch_size):
        stop = min(start + batch_size, len(plan.rows))
        q0, q1 = bisect_left(read_row, start), bisect_left(read_row, stop)
        t0, t1 = bisect_left(tok_read, q0), bisect_left(tok_read, q1)
        if t0 == t1:
            continue
        chunk = [(plan.prompts[i], path) for i, path in plan.rows[start:stop]]
        tokens = torch.full((len(chunk), max(len(p) + len(path) for p, path in chunk)), pad_id, dtype=torch.long)
        for r, (p, path) in enumerate(chunk):
            tokens[r, : len(p) + len(path)] = torch.tensor([*p, *path], dtype=torch.long)
        logits = model(tokens.to(device))
        ids = [t for _, t, _ in plan.tokens[t0:t1]]
        if max(ids) >= logits.shape[-1] or min(ids) < 0:
            bad = max(ids) if max(ids) >= logits.shape[-1] else min(ids)
            raise DataError(f"Answer token id {bad} is outside the model's vocabulary "
                            f"(0..{logits.shape[-1] - 1}). Build the Trait with the models' tokenizer.")
        dev = logits.device
        rr, pos = (torch.tensor(x, device=dev) for x in zip(*plan.reads[q0:q1]))
        sel = logits[rr - start, pos]
        lp = F.log_softmax(sel.to(torch.promote_types(sel.dtype, torch.float32)), dim=-1)
        q = torch.tensor(tok_read[t0:t1], device=dev) - q0
        parts.append(lp[q, torch.tensor(ids, device=dev)])
        where.append(torch.tensor([o for _, _, o in plan.tokens[t0:t1]], device=dev))
    lp = torch.cat(parts)
    out = torch.zeros(len(plan.prompts) * plan.n_forms, dtype=lp.dtype, device=lp.device)
    return out.index_add(0, torch.cat(where), lp).reshape(len(plan.prompts), plan.n_forms)


def score_rows(model: LogitsFn, plan: FormRows, pad_id: int, device: torch.device | str = "cpu",
               batch_size: int = 256) -> Float[Tensor, "prompts answers"]:
    """log P(answer | prompt) of every prompt and answer of `plan`: the log of the sum over the
    answer's forms of the teacher-forced product; differentiable."""
    lp = form_log_probs(model, plan, pad_id, device, batch_size)
    slot, seen = [], [0] * plan.n_answers
    for a in plan.answer_of:
        slot.append(seen[a])
        seen[a] += 1
    n = len(plan.prompts)
    i = torch.arange(n, device=lp.device).repeat_interleave(plan.n_forms)
    a = torch.tensor(plan.answer_of, device=lp.device).repeat(n)
    k = torch.tensor(slot, device=lp.device).repeat(n)
    grid = torch.full((n, plan.n_answers, max(seen)), float("-inf"), dtype=lp.dtype, device=lp.device)
    return grid.index_put((i, a, k), lp.reshape(-1)).logsumexp(-1)


def answer_log_probs(model: LogitsFn, prompts: Sequence[Form], forms: Sequence[Sequence[Form]], pad_id: int,
                     device: torch.device | str = "cpu", batch_size: int = 256,
                     share: bool = True) -> Float[Tensor, "prompts answers"]:
    """log P(answer | prompt) for every prompt and answer (`forms[a]`: answer a's surface forms):
    the log of the sum over its forms of the teacher-forced product, forms sharing rows along each
    prompt's trie (share=False: one row per prompt x form); differentiable."""
    return score_rows(model, form_rows(prompts, forms, share), pad_id, device, batch_size)


@torch.inference_mode()
def sample_continuations(model: LogitsFn, prompt: Form, n: int, steps: int, pad_id: int,
                         gen: torch.Generator, device: torch.device | str = "cpu",
                         batch_size: int = 256) -> Int[Tensor, "n steps"]:
    """`n` continuations of `prompt`, `steps` tokens each, sampled at temperature 1 (a re-forward
    loop, the logits callable having no KV cache; each step forwards each distinct prefix once:
    one row at the first step)."""
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        tokens = torch.full((b, len(prompt) + steps - 1), pad_id, dtype=torch.long)
        tokens[:, : len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        drawn = torch.empty((b, steps), dtype=torch.long)
        for s in range(steps):
            cur = len(prompt) + s
            prefixes, row_of = torch.unique(tokens[:, :cur], dim=0, return_inverse=True)
            logits = model(prefixes.to(device))[:, cur - 1][row_of.to(device)]
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
