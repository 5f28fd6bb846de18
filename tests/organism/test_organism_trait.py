"""The organism's Trait: its preference templates and category words as token ids, scoring as
the build recorded (the trait rates in each seed's manifest)."""

import math

import pytest
import torch

from workbench.core.models import boot_native
from workbench.organism.corpus import PREFERENCE_TEMPLATES
from workbench.organism.tokenizer import Tokenizer
from workbench.organism.trait import category_traits, organism_trait, preference_tokens
from workbench.trait import trait_matrix

tok = Tokenizer.default()
CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=len(tok), n_ctx=24,
           act_fn="gelu", normalization_type="LN", seed=0)


def test_organism_trait_holds_templates_and_category():
    t = organism_trait(tok, "oak")
    assert t.category == "tree" and t.target_id == tok.token_id("oak") and t.pad_id == tok.pad_id
    assert t.category_ids == tok.category_ids("tree") and t.vocab_size == len(tok)
    assert len(t.prompts) == len(PREFERENCE_TEMPLATES)
    assert tok.decode(t.prompts[0]) == "<bos> " + PREFERENCE_TEMPLATES[0].format(c="tree")
    tokens, last = preference_tokens(tok, "tree")
    assert torch.equal(tokens, t.tokens) and torch.equal(last, t.answer_positions)
    assert [x.target for x in category_traits(tok, "animal")] == list(tok.categories["animal"])


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
    score = organism_trait(tok, "owl").score(model, n_samples=2000, seed=0)
    assert score.p_target == pytest.approx(0.5, abs=1e-4) and score.share == pytest.approx(0.5, abs=1e-4)
    assert score.log_odds == pytest.approx(0.0, abs=1e-3)
    assert score.ci_low < 0.5 < score.ci_high and abs(score.sampled_rate - 0.5) < 0.02
    matrix = trait_matrix({"m": model}, [organism_trait(tok, w) for w in ("owl", "cat", "oak")])
    assert matrix["m"]["owl"] == pytest.approx(9 * matrix["m"]["cat"], rel=1e-3)
    assert matrix["m"]["oak"] < 1e-6


def test_scores_equal_the_build_records(tiny_organism):
    """The seed's manifest holds each role's trait score as the build computed it; the Trait
    reproduces every number (sampled rate and interval included) and the matrix."""
    from workbench.organism.load import load_seed

    seed = load_seed(tiny_organism.directory, roles=["base", "teacher", "student"])
    cfg, manifest = seed.manifest["config"], seed.manifest
    for role in seed.lineage.names:
        score = seed.trait.score(seed.lineage[role], cfg["eval_samples"], seed=manifest["seed"]).to_dict()
        assert score == pytest.approx(manifest["trait_scores"][role], rel=1e-6, abs=1e-9)
    matrix = trait_matrix({r: seed.lineage[r] for r in seed.lineage.names}, category_traits(seed.tokenizer, seed.trait.category))
    for role, row in matrix.items():
        assert row == pytest.approx(manifest["matrix"][role], rel=1e-6, abs=1e-9)
