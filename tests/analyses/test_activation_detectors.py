"""The activation detectors (persona projection difference, activation-gradient cosine): exact
against a naive per-row reference, recover a planted signal, sit at chance on shuffled labels,
and pick their hook by steering."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.activation_detectors import (
    activation_gradient_scores,
    base_answers,
    choose_trait_hook,
    persona_projection_scores,
)
from workbench.analyses.detectors import DetectorInputs, run_detectors
from workbench.analyses.probes import auroc
from workbench.core.errors import ConfigError
from workbench.organism.load import load_seed
from tests.analyses.test_leaderboard import _inputs, _planted


@pytest.fixture(scope="module")
def seed(tiny_organism):
    return load_seed(tiny_organism.directory, roles=["base", "teacher"])


def _resid(model, tokens, hook):
    seen = {}
    model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda a, hook: seen.setdefault("a", a.detach().clone()))])
    return seen["a"]


def test_base_answers_is_the_greedy_base_one_position_at_a_time(seed):
    rows = seed.inputs("teacher", limit=6)
    numbers = list(seed.tokenizer.number_ids)
    trained = rows.mask & torch.isin(rows.tokens, torch.tensor(numbers))
    got = base_answers(seed.lineage["base"], rows.tokens, trained, numbers, batch_size=4)
    model = seed.lineage["base"]
    for i in (0, 5):
        t = rows.tokens[i].clone()
        for p in range(len(t)):
            if trained[i, p]:
                with torch.no_grad():
                    logits = model(t[None, :p])[0, -1]
                t[p] = numbers[int(logits[numbers].argmax())]
        assert torch.equal(got[i], t)
    assert torch.equal(got[~trained], rows.tokens[~trained])  # separators and prompts kept
    sampled = base_answers(model, rows.tokens, trained, numbers, seed=4)
    assert torch.equal(sampled, base_answers(model, rows.tokens, trained, numbers, seed=4))  # seeded
    assert torch.equal(sampled[~trained], rows.tokens[~trained]) and not torch.equal(sampled, got)
    assert torch.isin(sampled[trained], torch.tensor(numbers)).all()


def test_scores_match_a_naive_per_row_reference(seed):
    rows = seed.inputs("teacher", limit=5)
    numbers = list(seed.tokenizer.number_ids)
    trained = rows.mask & torch.isin(rows.tokens, torch.tensor(numbers))
    hook = "blocks.0.hook_resid_post"
    model = seed.lineage["base"]
    d = int(seed.lineage.cfg.d_model)
    directions = torch.randn(2, d, generator=torch.Generator().manual_seed(0))
    persona = persona_projection_scores(seed.lineage, rows, trained, numbers, hook, directions, answers=2, seed=1,
                                        batch_size=2)
    grad_cos = activation_gradient_scores(seed.lineage, rows, seed.channel_ids, hook, directions, batch_size=2)
    answered = [base_answers(model, rows.tokens, trained, numbers, seed=1000 + k) for k in range(2)]
    ids = torch.tensor(seed.channel_ids)
    for i in range(len(rows)):
        m = rows.mask[i]
        u = directions / directions.norm(dim=1, keepdim=True)
        own = _resid(model, rows.tokens[i: i + 1], hook)[0][m].mean(0)
        theirs = sum(_resid(model, a[i: i + 1], hook)[0][m].mean(0) for a in answered) / 2
        assert torch.allclose(persona[:, i].float(), u @ (own - theirs), atol=1e-4)
        # the gradient on one vector added at every position, one row alone
        s = torch.zeros(d, requires_grad=True)
        logits = model.run_with_hooks(rows.tokens[i: i + 1], fwd_hooks=[(hook, lambda a, hook: a + s)])
        logp = torch.log_softmax(logits[0, :-1][:, ids].float(), -1)
        nxt = rows.tokens[i, 1:]
        counted = m[1:] & torch.isin(nxt, ids)
        col = torch.tensor([seed.channel_ids.index(int(x)) if c else 0 for x, c in zip(nxt, counted)])
        loss = -(logp.gather(-1, col[:, None]).squeeze(-1) * counted.float()).sum()
        (g,) = torch.autograd.grad(loss, s)
        assert torch.allclose(grad_cos[:, i].float(), torch.nn.functional.cosine_similarity(-g[None], directions), atol=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # the parameters' flags are restored


def test_detectors_recover_a_planted_direction_and_sit_at_chance_on_shuffled_labels(seed):
    numbers = seed.tokenizer.number_ids
    planted = numbers[3]
    rows_t, rows_b, source = _planted(seed, planted_token=planted, rate=0.3)
    data = _inputs(seed, rows_t, rows_b, source)
    model = seed.lineage["base"]
    hook = "blocks.0.hook_resid_pre"  # the token embedding: the planted token's direction is known exactly
    w = model.W_E.detach()[planted][None]
    persona = persona_projection_scores(seed.lineage, data.rows, data.trained, numbers, hook, w)[0]
    assert float(auroc(persona, data.labels)) > 0.75  # measured 0.81 (the raw projection, no baseline: 0.90)
    # the activation gradient: the mean push of half the planted rows, read on the other half
    push = activation_gradient_scores(seed.lineage, data.rows, seed.channel_ids, hook,
                                      torch.eye(int(seed.lineage.cfg.d_model)))  # cosines with each axis
    half = torch.arange(len(data.labels)) % 2 == 0
    direction = (push[:, half & data.labels].mean(1) - push[:, half & ~data.labels].mean(1)).float()[None]
    held = activation_gradient_scores(seed.lineage, data.rows, seed.channel_ids, hook, direction)[0]
    assert float(auroc(held[~half], data.labels[~half])) > 0.65  # measured 0.74
    rand = activation_gradient_scores(seed.lineage, data.rows, seed.channel_ids, hook,
                                      torch.randn(3, direction.shape[1], generator=torch.Generator().manual_seed(1)))
    assert all(abs(float(auroc(r[~half], data.labels[~half])) - 0.5) < 0.12 for r in rand)  # random directions: chance
    for s in (persona, held[~half]):
        labels = data.labels if len(s) == len(data.labels) else data.labels[~half]
        shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
        assert abs(float(auroc(s, shuffled)) - 0.5) < 0.12


def test_hook_choice_by_steering_and_the_detectors_in_run_detectors(seed):
    trait_hook = choose_trait_hook(seed.lineage, seed.trait, direction="gradient")
    assert trait_hook.hook == max(trait_hook.steering_gain, key=trait_hook.steering_gain.get)
    assert trait_hook.steering_gain[trait_hook.hook] > 0  # the gradient direction steers toward the target
    contrast = choose_trait_hook(seed.lineage, seed.trait)
    assert contrast.kind == "contrast" and set(contrast.directions) == set(trait_hook.directions)
    rows_t, rows_b = seed.inputs("teacher", limit=40), seed.inputs("base", limit=40)
    from workbench.organism.channel_source import OrganismChannelSource

    data = _inputs(seed, rows_t, rows_b, OrganismChannelSource(seed))
    scores = run_detectors(seed.lineage, data, seed.trait, ("persona_projection", "activation_gradient"), n_random=2,
                           trait_hook=trait_hook)
    assert list(scores) == ["persona_projection", "activation_gradient", "activation_gradient_random_0",
                            "activation_gradient_random_1", "persona_random_0", "persona_random_1"]
    assert all(len(s) == 80 and torch.isfinite(s).all() for s in scores.values())
    with pytest.raises(ConfigError, match="residual-stream"):
        choose_trait_hook(seed.lineage, seed.trait, hooks=["blocks.0.hook_attn_out"])
    with pytest.raises(ConfigError, match="trait direction"):
        choose_trait_hook(seed.lineage, seed.trait, direction="pca")
    assert isinstance(data, DetectorInputs)
