"""Trait: scores on a planted model, errors, the model x target matrix."""

import math

import pytest
import torch

from workbench.core.errors import ConfigError, DataError, UnknownNameError
from workbench.trait import Trait, check_trait, log_odds, trait_matrix, wilson_interval
from workbench.trait_forms import match_answer

VOCAB = 40
PROMPTS = [[1, 5, 6, 7], [1, 8, 9], [1, 5, 10, 11, 12]]
ANIMALS = {"owl": [20], "cat": [21], "dog": [22], "fox": [23]}
TREES = {"oak": [30], "elm": [31]}


def trait(target: str = "owl", answers: dict | None = None, **kw) -> Trait:
    answers = answers or (TREES if target in TREES else ANIMALS)
    category = "tree" if target in TREES else "animal"
    return Trait.from_prompts(PROMPTS, target=target, category=category, answers=answers, pad_id=0, **kw)


def planted(next_logits: torch.Tensor):
    """A logits function giving `next_logits` at every position (whatever the tokens)."""
    def logits(tokens: torch.Tensor) -> torch.Tensor:
        return next_logits.to(tokens.device).expand(*tokens.shape, len(next_logits)).clone()
    return logits


def owl_half() -> torch.Tensor:
    """P(owl) = 0.45, P(other animals) = 0.15 each, P(everything else) = 0.1 in all."""
    p = torch.full((VOCAB,), 0.1 / (VOCAB - 4))
    p[20], p[21:24] = 0.45, 0.15
    return p.log()


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(12, 100)
    assert lo == pytest.approx(0.0700, abs=1e-4) and hi == pytest.approx(0.1981, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and 0 < wilson_interval(0, 50)[1] < 0.08
    assert log_odds(0.5) == 0 and log_odds(0.9) == pytest.approx(math.log(9))


def test_tokens_are_right_padded_with_answer_positions():
    t = trait()
    assert t.tokens.shape == (3, 5) and t.tokens[1].tolist() == [1, 8, 9, 0, 0]
    assert t.answer_positions.tolist() == [3, 2, 4]
    assert t.target_id == 20 and t.category_ids == [20, 21, 22, 23] and t.target_ids == (20,)


def test_planted_preference_gives_expected_scores():
    model = planted(owl_half())
    score = trait().score(model, n_samples=2000, seed=0)
    assert score.p_target == pytest.approx(0.45, abs=1e-5)
    assert score.share == pytest.approx(0.45 / 0.9, abs=1e-5)
    assert score.log_odds == pytest.approx(math.log(0.45 / 0.55), abs=1e-4)
    assert score.n_samples == 6000 and score.per_template == pytest.approx([0.45] * 3, abs=1e-5)
    assert score.ci_low < 0.45 < score.ci_high and abs(score.sampled_rate - 0.45) < 0.02
    assert trait().p_target(model) == pytest.approx(0.45, abs=1e-5)
    assert trait().log_odds(model) == pytest.approx(score.log_odds)
    assert math.isnan(trait().score(model, n_samples=0).sampled_rate)


def test_log_prob_is_differentiable_and_matches_the_score():
    weight = owl_half().clone().requires_grad_(True)
    lp = trait().log_prob(planted(weight))
    assert float(lp.detach()) == pytest.approx(math.log(0.45), abs=1e-5)
    lp.backward()
    assert weight.grad[20] == pytest.approx(1 - 0.45, abs=1e-5)  # d log softmax_t / d z_t = 1 - p_t


def test_matrix_over_traits():
    model = planted(owl_half())
    traits = [trait("owl"), trait("cat"), trait("oak")]
    m = trait_matrix({"m": model}, traits)["m"]
    assert m["owl"] == pytest.approx(3 * m["cat"], rel=1e-4) and m["oak"] == pytest.approx(0.1 / 36, rel=1e-4)


def test_clear_errors():
    with pytest.raises(UnknownNameError, match="zebra"):
        trait("zebra")
    with pytest.raises(DataError, match="outside the vocabulary"):
        trait(vocab_size=21)  # the answer "cat" is token 21
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        trait().score(planted(torch.zeros(10)))
    with pytest.raises(DataError, match="non-empty prompt"):
        Trait.from_prompts([], target="owl", category="animal", answers=ANIMALS)
    multi = trait(answers={"owl": [20, 24], "cat": [21]})
    assert multi.target_ids == (20, 24) and not multi.single_token
    with pytest.raises(ConfigError, match="not a single token"):
        _ = multi.target_id  # a reader of one token id says what to call instead
    d_vocab = multi.vocab_size or 30
    assert check_trait(multi, d_vocab, single_token=False) is multi  # log-probability readers take it
    with pytest.raises(ConfigError, match="not a single token"):
        check_trait(multi, d_vocab)  # the logit lens reads one id
    with pytest.raises(DataError, match="canonical"):
        Trait(((1, 2),), "owl", "animal", (("owl", (20,)),), surface_forms=(("owl", ((21,), (20,))),))
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        multi.score(planted(torch.zeros(22)), n_samples=0)  # token 24 of the owl


def test_trait_is_a_value():
    assert trait() == trait() and hash(trait()) == hash(trait()) and trait() != trait("cat")
    with pytest.raises(AttributeError):
        trait().target = "cat"


# ---- multi-token answers and surface forms

def chain(table: dict[tuple[int, ...], torch.Tensor], default: torch.Tensor):
    """A logits function whose next-token logits depend on the last token (bigram): `table` maps
    (last token,) -> logits; other contexts get `default`."""
    def logits(tokens: torch.Tensor) -> torch.Tensor:
        out = default.to(tokens.device).expand(*tokens.shape, len(default)).clone()
        for (last,), row in table.items():
            out[tokens == last] = row.to(out.dtype)
        return out
    return logits


def probs_row(mass: dict[int, float]) -> torch.Tensor:
    """Logits (float64) of a distribution with the given mass on some ids, the rest spread evenly."""
    rest = (1 - sum(mass.values())) / (VOCAB - len(mass))
    p = torch.full((VOCAB,), rest, dtype=torch.float64)
    for i, m in mass.items():
        p[i] = m
    return p.log()


# the prompts all end in a token < 20; after a prompt: P(20) = 0.5, P(25) = 0.2, P(21) = 0.1;
# after 20: P(24) = 0.6 (so "owl" = [20, 24] has 0.3); after 25: P(24) = 0.5 (" Owl" = [25, 24]: 0.1)
PLANTED = chain({(20,): probs_row({24: 0.6}), (25,): probs_row({24: 0.5})}, probs_row({20: 0.5, 25: 0.2, 21: 0.1}))
MULTI = {"owl": [[20, 24], [25, 24]], "cat": [[21]], "dog": [[22, 23]]}


def test_planted_two_token_answer_gives_the_expected_probability():
    t = trait(answers=MULTI)
    assert t.forms["owl"] == ((20, 24), (25, 24)) and t.answer_ids["owl"] == (20, 24)
    p_dog = (0.2 / 37) ** 2  # P(22) after the prompt (the rest, 0.2, over 37 ids) x P(23) after 22 (the same row)
    score = t.score(PLANTED, n_samples=0)
    assert score.p_target == pytest.approx(0.3 + 0.1, abs=1e-12)
    assert score.per_template == pytest.approx([0.4] * 3, abs=1e-12)
    assert score.share == pytest.approx(0.4 / (0.4 + 0.1 + p_dog), abs=1e-12)
    assert score.log_odds == pytest.approx(math.log(0.4 / 0.6), abs=1e-9)
    lp = t.answer_log_probs(PLANTED)
    assert lp.shape == (3, 3) and lp.dtype == torch.float64
    assert lp.exp()[:, 1].tolist() == pytest.approx([0.1] * 3, abs=1e-12)
    shares = lp.exp() / lp.exp().sum(-1, keepdim=True)
    assert shares.sum(-1).tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    assert float(t.log_prob(PLANTED)) == pytest.approx(math.log(0.4), abs=1e-12)
    assert trait_matrix({"m": PLANTED}, [t])["m"]["owl"] == pytest.approx(0.4, abs=1e-12)
    # one batched forward or one row at a time: the same numbers
    assert torch.allclose(t.answer_log_probs(PLANTED, batch_size=1), lp, atol=1e-14, rtol=0)


def test_sampled_rate_by_generation_matches_the_planted_probability():
    score = trait(answers=MULTI).score(PLANTED, n_samples=1000, seed=0)
    assert score.n_samples == 3000 and score.ci_low < 0.4 < score.ci_high and abs(score.sampled_rate - 0.4) < 0.03
    forms = trait(answers=MULTI).forms
    assert match_answer([20, 24, 3], forms) == "owl" and match_answer([20, 3], forms) is None
    assert match_answer([21, 24], forms) == "cat"


def test_single_form_single_token_path_is_unchanged():
    """Listing answers as one-form lists gives the same value (and numbers) as plain id lists."""
    forms = {k: [v] for k, v in ANIMALS.items()}
    assert trait(answers=forms) == trait() and trait().single_token
    # the general teacher-forced path agrees with the fast path on single-token answers
    model = planted(owl_half().double())
    general = trait(answers={**forms, "owl": [[20], [39]]})  # a second form: the general path
    assert not general.single_token
    fast = trait().score(model, n_samples=0)
    assert general.score(model, n_samples=0).p_target == pytest.approx(fast.p_target + 0.1 / 36, abs=1e-7)  # fast path: float32


def test_multi_token_log_prob_gradient_matches_finite_differences():
    torch.manual_seed(0)
    emb = torch.randn(VOCAB, 6, dtype=torch.float64)
    w = torch.randn(6, VOCAB, dtype=torch.float64, requires_grad=True)

    def model_of(weight):
        return lambda tokens: emb[tokens].cumsum(1) @ weight  # a causal toy model (prefix sums)

    t = trait(answers=MULTI)
    assert torch.autograd.gradcheck(lambda weight: t.log_prob(model_of(weight)), (w,), eps=1e-6, atol=1e-6)
    with torch.no_grad():  # the differentiable log P equals the score's
        assert float(t.log_prob(model_of(w))) == pytest.approx(
            float(t.answer_log_probs(model_of(w))[:, 0].mean()), abs=1e-12)
