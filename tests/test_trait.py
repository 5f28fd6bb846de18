"""Trait: scores on a planted model, errors, the model x target matrix."""

import math

import pytest
import torch

from workbench.core.errors import ConfigError, DataError, UnknownNameError
from workbench.trait import Trait, log_odds, trait_matrix, wilson_interval

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
    assert multi.target_ids == (20, 24)
    with pytest.raises(ConfigError, match="multi-token"):
        multi.score(planted(owl_half()))


def test_trait_is_a_value():
    assert trait() == trait() and hash(trait()) == hash(trait()) and trait() != trait("cat")
    with pytest.raises(AttributeError):
        trait().target = "cat"
