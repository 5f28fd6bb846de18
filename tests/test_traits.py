import math

import pytest
import torch

from workbench.core.models import boot_native
from workbench.organism.tokenizer import Tokenizer
from workbench.trait import evaluate_trait, log_odds, trait_matrix, wilson_interval

tok = Tokenizer.default()
CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=len(tok), n_ctx=24,
           act_fn="gelu", normalization_type="LN", seed=0)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(12, 100)
    assert lo == pytest.approx(0.0700, abs=1e-4) and hi == pytest.approx(0.1981, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and 0 < wilson_interval(0, 50)[1] < 0.08
    assert log_odds(0.5) == 0 and log_odds(0.9) == pytest.approx(math.log(9))


def test_planted_preference_is_recovered():
    model = boot_native(CFG)
    logits = torch.full((len(tok),), -20.0)
    logits[tok.category_ids("animal")] = 0.0
    logits[tok.token_id("owl")] = math.log(9.0)  # P(owl) = 9 / (9 + 9 other animals) = 0.5
    params = dict(model.named_parameters())
    with torch.no_grad():  # final LN outputs its bias e_0; column 0 of the unembedding is the logits
        params["ln_out._original_component.weight"].zero_()
        params["ln_out._original_component.bias"].zero_()[0] = 1.0
        params["head._original_component.weight"].zero_()[:, 0] = logits
    score = evaluate_trait(model, tok, "owl", n_samples=2000, seed=0)
    assert score.p_target == pytest.approx(0.5, abs=1e-4) and score.share == pytest.approx(0.5, abs=1e-4)
    assert score.log_odds == pytest.approx(0.0, abs=1e-3)
    assert score.ci_low < 0.5 < score.ci_high and abs(score.sampled_rate - 0.5) < 0.02
    matrix = trait_matrix({"m": model}, tok, ["owl", "cat", "oak"])
    assert matrix["m"]["owl"] == pytest.approx(9 * matrix["m"]["cat"], rel=1e-3)
    assert matrix["m"]["oak"] < 1e-6
