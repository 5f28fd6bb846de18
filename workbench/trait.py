"""A trait as data: the prompts that ask for a favourite, where the answer goes, and which
tokens answer; with the scores every analysis reads from it.

For a model and a `Trait` (e.g. target "owl" in the category "animal"): P(target) at the answer
position averaged over the prompts; its share among the category's answers (robust to
probability mass leaking to non-answers); log-odds (the scale on which effects near zero are
compared); a sampled rate with a Wilson 95% interval; a differentiable log P(target) for trait
gradients; and the model x target matrix, so a student's general drift is never mistaken for
transfer.

A source builds its own Trait (the organism from its tokenizer and templates: see
`workbench.organism.trait`; a Hugging Face tokenizer: `workbench.core.hf_trait`); nothing here
knows where the tokens came from. An answer is a sequence of token ids, and may have several
surface forms (" owl", "Owl", " owls"): P(answer) is then the sum over its forms of the
teacher-forced product over each form's tokens (`workbench.trait_forms`). When every answer is
one token with one form (the organism) the scores read one next-token distribution, as before.

>>> trait = Trait.from_prompts([[1, 5, 6], [1, 7]], target="owl", category="animal",
...                            answers={"owl": [9], "cat": [10]}, pad_id=0)
>>> trait.tokens.tolist(), trait.answer_positions.tolist(), trait.target_id, trait.category_ids
([[1, 5, 6], [1, 7, 0]], [2, 1], 9, [9, 10])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from workbench.core.errors import ConfigError, DataError, unknown_name

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


def _device_of(model: LogitsFn) -> torch.device:
    if isinstance(model, torch.nn.Module):
        return next(model.parameters()).device
    return torch.device("cpu")


@dataclass(frozen=True)
class Trait:
    """What the analyses need from a trait, as token ids.

    prompts: one row of token ids per template (the question, ending where the answer goes;
        the model's next-token distribution at the last position is read).
    target, category: names (e.g. "owl", "animal"), for labels and errors.
    answers: every answer of the category, name -> its token ids (the target among them), in
        the category's order: the answer's canonical form (what contrast prompts append).
    pad_id: the id prompts are right-padded with.
    vocab_size: the models' vocabulary size when known (ids are checked against it).
    surface_forms: name -> every surface form's token ids (the canonical one first), when some
        answer has more than one form; empty when each answer is its canonical form alone.
    """

    prompts: tuple[tuple[int, ...], ...]
    target: str
    category: str
    answers: tuple[tuple[str, tuple[int, ...]], ...]
    pad_id: int = 0
    vocab_size: int | None = None
    surface_forms: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] = ()

    def __post_init__(self) -> None:
        if not self.prompts or any(len(p) == 0 for p in self.prompts):
            raise DataError(f"Trait {self.target!r} needs at least one non-empty prompt; got {len(self.prompts)} prompts.")
        names = [n for n, _ in self.answers]
        if self.target not in names:
            raise unknown_name("target", self.target, names, f"Pick one of the answers of the category {self.category!r}.")
        if any(len(ids) == 0 for _, ids in self.answers):
            raise DataError(f"Trait {self.target!r}: every answer needs at least one token id.")
        if self.surface_forms:
            if [n for n, _ in self.surface_forms] != names:
                raise DataError(f"Trait {self.target!r}: surface_forms must name the answers in order ({names}); got "
                                f"{[n for n, _ in self.surface_forms]}.")
            for (n, forms), (_, ids) in zip(self.surface_forms, self.answers):
                if not forms or forms[0] != ids or any(len(f) == 0 for f in forms):
                    raise DataError(f"Trait {self.target!r}: answer {n!r} needs non-empty surface forms, its "
                                    f"canonical ids {list(ids)} first; got {[list(f) for f in forms]}.")
        if self.vocab_size is not None:
            for ids in [*self.prompts, *(f for forms in self.forms.values() for f in forms)]:
                bad = [i for i in ids if not 0 <= i < self.vocab_size]
                if bad:
                    raise DataError(f"Trait {self.target!r}: token id {bad[0]} is outside the vocabulary "
                                    f"(0..{self.vocab_size - 1}). Build the Trait with the models' tokenizer.")

    @classmethod
    def from_prompts(cls, prompts: Sequence[Sequence[int]], *, target: str, category: str,
                     answers: Mapping[str, Sequence[int] | Sequence[Sequence[int]]], pad_id: int = 0,
                     vocab_size: int | None = None) -> Trait:
        """A Trait from plain lists: prompt rows and name -> answer ids, or name -> a list of surface
        forms' ids (the first one canonical; repeated forms count once)."""
        forms: dict[str, tuple[tuple[int, ...], ...]] = {}
        for name, value in answers.items():
            seqs = [value] if not value or not isinstance(value[0], Sequence) else list(value)
            forms[name] = tuple(dict.fromkeys(tuple(int(i) for i in f) for f in seqs))
        several = any(len(f) > 1 for f in forms.values())
        return cls(tuple(tuple(int(i) for i in p) for p in prompts), target, category,
                   tuple((n, f[0] if f else ()) for n, f in forms.items()), int(pad_id), vocab_size,
                   tuple(forms.items()) if several else ())

    # ---- token ids

    @cached_property
    def tokens(self) -> Int[Tensor, "templates seq"]:
        """The prompts, right-padded with `pad_id` (a plain tensor even when first read under
        inference mode, so later differentiable reads can use it)."""
        width = max(map(len, self.prompts))
        with torch.inference_mode(False):
            out = torch.full((len(self.prompts), width), self.pad_id, dtype=torch.long)
            for i, row in enumerate(self.prompts):
                out[i, : len(row)] = torch.tensor(row)
        return out

    @cached_property
    def answer_positions(self) -> Int[Tensor, " templates"]:
        """Index of each prompt's last token: the logits there predict the answer."""
        with torch.inference_mode(False):
            return torch.tensor([len(p) - 1 for p in self.prompts])

    @property
    def answer_ids(self) -> dict[str, tuple[int, ...]]:
        """Every answer of the category, name -> token ids."""
        return dict(self.answers)

    @property
    def forms(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Every answer's surface forms as token ids, name -> forms (the canonical one first)."""
        return dict(self.surface_forms) if self.surface_forms else {n: (ids,) for n, ids in self.answers}

    @property
    def single_token(self) -> bool:
        """True when every answer is one token with one form: scores read one next-token
        distribution (the organism's path)."""
        return not self.surface_forms and all(len(ids) == 1 for _, ids in self.answers)

    @property
    def target_ids(self) -> tuple[int, ...]:
        """The target's answer as token ids (one id for a single-token answer)."""
        return self.answer_ids[self.target]

    @property
    def target_id(self) -> int:
        """The target's single answer token."""
        return self._single(self.target, self.target_ids)

    @property
    def category_ids(self) -> list[int]:
        """The single answer token of every answer of the category, in order."""
        return [self._single(n, ids) for n, ids in self.answers]

    def _single(self, name: str, ids: tuple[int, ...]) -> int:
        if len(ids) != 1 or self.surface_forms:
            raise ConfigError(f"Answer {name!r} of trait {self.target!r} is not a single token with a single form "
                              f"(ids {list(ids)}, forms {[list(f) for f in self.forms[name]]}); this reads one token "
                              "id. Score multi-token answers with score / p_target / log_odds / log_prob / "
                              "answer_log_probs instead.")
        return ids[0]

    # ---- scores

    @torch.inference_mode()
    def answer_probs(self, model: LogitsFn) -> Float[Tensor, "templates vocab"]:
        """Next-token distribution at the answer position of every prompt (float32, CPU)."""
        last = self.answer_positions
        logits = model(self.tokens.to(_device_of(model)))
        return torch.softmax(logits[torch.arange(len(last)), last.to(logits.device)].float(), dim=-1).cpu()

    def answer_log_probs(self, model: LogitsFn, batch_size: int = 256) -> Float[Tensor, "templates answers"]:
        """log P(answer | prompt) for every prompt and answer of the category (float64, CPU): the
        log of the sum over the answer's surface forms of the teacher-forced product over each
        form's tokens; forms share rows along each prompt's trie (`workbench.trait_forms`),
        `batch_size` rows per forward.
        Differentiable when called with gradients enabled."""
        from workbench.trait_forms import answer_log_probs

        names = [n for n, _ in self.answers]
        return answer_log_probs(model, self.prompts, [self.forms[n] for n in names], self.pad_id,
                                _device_of(model), batch_size).double().cpu()

    def score(self, model: LogitsFn, n_samples: int = 500, seed: int = 0) -> TraitScore:
        """`model`'s preference for the target; `n_samples` sampled answers per prompt (multi-token
        answers: by generation, see `workbench.trait_forms.sampled_hits`)."""
        if self.single_token:
            return self.score_probs(self.answer_probs(model), n_samples, seed)
        from workbench.trait_forms import sampled_hits

        with torch.inference_mode():
            p = self.answer_log_probs(model).exp()
        names = [n for n, _ in self.answers]
        p_t = p[:, names.index(self.target)]
        hits = sampled_hits(model, self, n_samples, seed) if n_samples > 0 else 0
        total = n_samples * len(p_t)
        lo, hi = wilson_interval(hits, total)
        p_mean = float(p_t.mean())
        return TraitScore(
            target=self.target, category=self.category, p_target=p_mean,
            share=float((p_t / p.sum(-1).clamp(min=1e-300)).mean()), log_odds=float(log_odds(p_mean)),
            sampled_rate=hits / total if total else float("nan"), ci_low=lo, ci_high=hi, n_samples=total,
            per_template=[float(x) for x in p_t],
        )

    def score_probs(self, probs: Float[Tensor, "templates vocab"], n_samples: int = 0, seed: int = 0) -> TraitScore:
        """The score of answer distributions already computed (see `answer_probs`; single-token
        answers only)."""
        t = self.target_id
        if t >= probs.shape[-1]:
            raise DataError(f"Target token id {t} is outside the model's vocabulary (0..{probs.shape[-1] - 1}).")
        cat_mass = probs[:, self.category_ids].sum(-1)
        p_t = probs[:, t]
        gen = torch.Generator().manual_seed(seed)
        draws = torch.multinomial(probs, n_samples, replacement=True, generator=gen) if n_samples > 0 else None
        hits = int((draws == t).sum()) if draws is not None else 0
        total = n_samples * len(p_t)
        lo, hi = wilson_interval(hits, total)
        p_mean = float(p_t.mean())
        return TraitScore(
            target=self.target, category=self.category, p_target=p_mean,
            share=float((p_t / cat_mass.clamp(min=1e-12)).mean()), log_odds=float(log_odds(p_mean)),
            sampled_rate=hits / total if total else float("nan"), ci_low=lo, ci_high=hi, n_samples=total,
            per_template=[float(x) for x in p_t],
        )

    def p_target(self, model: LogitsFn) -> float:
        """P(target) at the answer position, mean over prompts (no sampling). Multi-token answers:
        only the target's forms are scored (the other answers matter only for the share)."""
        if self.single_token:
            return self.score(model, n_samples=0).p_target
        from workbench.trait_forms import answer_log_probs

        with torch.inference_mode():
            lp = answer_log_probs(model, self.prompts, [self.forms[self.target]], self.pad_id, _device_of(model))
        return float(lp[:, 0].double().cpu().exp().mean())

    def log_odds(self, model: LogitsFn) -> float:
        """Log-odds of the mean P(target) over the prompts (no sampling)."""
        if self.single_token:
            return self.score(model, n_samples=0).log_odds
        return float(log_odds(self.p_target(model)))

    def log_prob(self, logits: LogitsFn, device: torch.device | str = "cpu") -> Float[Tensor, ""]:
        """log P(target) at the answer position, mean over prompts; differentiable (trait gradients).
        `logits` maps token ids on `device` to logits; the log-softmax runs in float32 at least.
        Multi-token answers: log of the sum over the target's forms of the teacher-forced product."""
        if not self.single_token:
            from workbench.trait_forms import answer_log_probs

            return answer_log_probs(logits, self.prompts, [self.forms[self.target]], self.pad_id, device)[:, 0].mean()
        target = self.target_id
        tokens, last = self.tokens.to(device), self.answer_positions.to(device)
        out = logits(tokens)[torch.arange(len(last), device=device), last]
        logp = F.log_softmax(out.to(torch.promote_types(out.dtype, torch.float32)), dim=-1)
        return logp[:, target].mean()


def trait_matrix(models: Mapping[str, LogitsFn], traits: Sequence[Trait]) -> dict[str, dict[str, float]]:
    """P(target) averaged over prompts for every model x trait (keyed by target name); traits
    sharing prompts share one forward pass."""
    out: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        probs: dict[tuple[tuple[int, ...], ...], Tensor] = {}
        row = {}
        for trait in traits:
            if not trait.single_token:
                row[trait.target] = trait.p_target(model)
                continue
            if trait.prompts not in probs:
                probs[trait.prompts] = trait.answer_probs(model)
            row[trait.target] = float(probs[trait.prompts][:, trait.target_id].mean())
        out[name] = row
    return out


def check_trait(trait: object, d_vocab: int, what: str = "The trait", single_token: bool = True) -> Trait:
    """`trait` if it is a Trait built for a vocabulary of `d_vocab` tokens (and, with
    `single_token`, one whose answers are single tokens: analyses reading one target id, like
    the logit lens); else a ConfigError naming the problem and the fix (checked before any work).
    Analyses that only need log-probabilities pass single_token=False."""
    if not isinstance(trait, Trait):
        raise ConfigError(f"{what} must be a Trait; got {type(trait).__name__}. Pass the source's Trait "
                          "(e.g. workbench.organism.organism_trait(tokenizer, 'owl') or load_seed(dir).trait).")
    if trait.vocab_size is not None and trait.vocab_size != d_vocab:
        raise ConfigError(f"Trait {trait.target!r} was built for a vocabulary of {trait.vocab_size} tokens; the "
                          f"models have {d_vocab}. Build the Trait with the models' tokenizer.")
    if single_token:
        _ = trait.target_id  # multi-token answers: a clear error before any work
    return trait
