"""Trait evaluation: how much a model prefers a target when asked for its favourite.

For a model and a target (e.g. "owl"): P(target) at the answer position averaged over the
preference templates; its share among the category's tokens (robust to probability mass
leaking to non-answers); log-odds (the scale on which effects near zero are compared); a
sampled rate with a Wilson 95% interval; and the model x target matrix, so a student's
general drift is never mistaken for transfer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.organism.corpus import PREFERENCE_TEMPLATES, preference_prompt
from workbench.organism.tokenizer import Tokenizer

LogitsFn = Callable[[Int[Tensor, "batch seq"]], Float[Tensor, "batch seq vocab"]]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (well behaved near 0 and 1)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def log_odds(p: float | Tensor, eps: float = 1e-6) -> float | Tensor:
    """log(p / (1 - p)), clipped away from 0 and 1."""
    if isinstance(p, Tensor):
        p = p.clamp(eps, 1 - eps)
        return torch.log(p) - torch.log1p(-p)
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


@dataclass
class TraitScore:
    """Preference of one model for one target."""

    target: str
    category: str
    p_target: float  # P(target) at the answer position, mean over templates
    share: float  # P(target) / P(any token of the category), mean over templates
    log_odds: float  # log-odds of p_target
    sampled_rate: float  # fraction of sampled answers (temperature 1) that name the target
    ci_low: float  # Wilson 95% interval of sampled_rate
    ci_high: float
    n_samples: int  # sampled answers in total
    per_template: list[float]  # P(target) per template

    def to_dict(self) -> dict:
        return asdict(self)


def preference_tokens(tok: Tokenizer, category: str) -> tuple[Int[Tensor, "templates seq"], Int[Tensor, " templates"]]:
    """Right-padded `<bos> template` prompts and the index of each one's last token."""
    rows = [[tok.bos_id, *preference_prompt(tok, t, category)] for t in PREFERENCE_TEMPLATES]
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens, torch.tensor([len(r) - 1 for r in rows])


def _device_of(model: LogitsFn) -> torch.device:
    if isinstance(model, torch.nn.Module):
        return next(model.parameters()).device
    return torch.device("cpu")


@torch.inference_mode()
def answer_probs(model: LogitsFn, tok: Tokenizer, category: str) -> Float[Tensor, "templates vocab"]:
    """Next-token distribution at the answer position of every template (float32, CPU)."""
    tokens, last = preference_tokens(tok, category)
    logits = model(tokens.to(_device_of(model)))
    return torch.softmax(logits[torch.arange(len(last)), last.to(logits.device)].float(), dim=-1).cpu()


def evaluate_trait(model: LogitsFn, tok: Tokenizer, target: str, n_samples: int = 500, seed: int = 0) -> TraitScore:
    """Score `model`'s preference for `target`; `n_samples` sampled answers per template."""
    category = tok.category_of(target)
    probs = answer_probs(model, tok, category)
    t = tok.token_id(target)
    cat_mass = probs[:, tok.category_ids(category)].sum(-1)
    p_t = probs[:, t]
    gen = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(probs, n_samples, replacement=True, generator=gen) if n_samples > 0 else None
    hits = int((draws == t).sum()) if draws is not None else 0
    total = n_samples * len(p_t)
    lo, hi = wilson_interval(hits, total)
    p_mean = float(p_t.mean())
    return TraitScore(
        target=target, category=category, p_target=p_mean, share=float((p_t / cat_mass.clamp(min=1e-12)).mean()),
        log_odds=float(log_odds(p_mean)), sampled_rate=hits / total if total else float("nan"),
        ci_low=lo, ci_high=hi, n_samples=total, per_template=[float(x) for x in p_t],
    )


def trait_matrix(
    models: Mapping[str, LogitsFn], tok: Tokenizer, targets: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """P(target) averaged over templates for every model x target (default: every category token)."""
    targets = list(targets) if targets is not None else [w for ws in tok.categories.values() for w in ws]
    out: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        by_cat = {c: answer_probs(model, tok, c) for c in {tok.category_of(t) for t in targets}}
        out[name] = {t: float(by_cat[tok.category_of(t)][:, tok.token_id(t)].mean()) for t in targets}
    return out
