"""Exactness of the gradient-alignment scores against a naive per-example backward loop
through the live bridge, in float64 (error <= 1e-6 of the largest reference value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.analyses.first_order import first_order_prediction
from workbench.analyses.group_scores import group_scores
from workbench.analyses.param_directions import only, random_direction, without
from workbench.analyses.path_scores import path_scores, quadrature
from workbench.analyses.trait_gradient import trait_gradient, trait_log_prob
from workbench.core.errors import ConfigError, DataError, UnknownNameError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective, iter_batches, per_token_losses, sequence_losses
from workbench.engines.per_example import alignment_scores
from workbench.organism.load import load_lineage
from workbench.organism.training import hard_distill_loss, next_token_loss, restricted_log_probs, soft_distill_loss
from workbench.organism.trait import organism_trait

TOL = 1e-6


@pytest.fixture(scope="module")
def lin64(tiny_organism):
    return load_lineage(tiny_organism.directory, roles=["base", "teacher", "student"], dtype=torch.float64)


@pytest.fixture(scope="module")
def rows(distill_rows):
    return distill_rows


def objective_for(kind: str, lin: Lineage) -> Objective:
    if kind == "hard":
        return Objective("hard")
    if kind == "hard_renorm":
        return Objective("hard", ids=torch.tensor(lin.tokenizer.number_channel_ids))
    teacher = {k: p.detach().clone() for k, p in lin.params("teacher").items()}
    return Objective("soft", ids=torch.tensor(lin.tokenizer.number_channel_ids), teacher=teacher)


def naive_token_losses(lin: Lineage, kind: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_{i,t} of one row [seq-1] through the live bridge, written out independently."""
    logits = lin["base"](tokens[None])[0, :-1]
    if kind == "hard":
        loss = F.cross_entropy(logits, tokens[1:], reduction="none")
    elif kind == "hard_renorm":
        ids = lin.tokenizer.number_channel_ids
        written = torch.tensor([ids.index(int(t)) if int(t) in ids else 0 for t in tokens[1:]])
        loss = F.cross_entropy(logits[:, ids], written, reduction="none")
    else:
        ids = torch.tensor(lin.tokenizer.number_channel_ids)
        with torch.no_grad():
            t = torch.log_softmax(lin["teacher"](tokens[None])[0, :-1][:, ids], -1)
        s = torch.log_softmax(logits[:, ids], -1)
        loss = (t.exp() * (t - s)).sum(-1)
    return loss * mask


def naive_grads(lin: Lineage, kind: str, x: Inputs, per_token: bool = False):
    """Per row (and per position) gradients of the loss w.r.t. the live parameters, one backward each."""
    params = lin.params("base")
    keys = list(params)
    mask = x.next_token_mask().double()
    out = []
    for i in range(len(x)):
        losses = naive_token_losses(lin, kind, x.tokens[i], mask[i])
        if per_token:
            row = []
            for t in range(len(losses)):
                if mask[i, t] == 0:
                    row.append(None)
                    continue
                g = torch.autograd.grad(losses[t], [params[k] for k in keys], retain_graph=True)
                row.append(dict(zip(keys, g)))
            out.append(row)
        else:
            g = torch.autograd.grad(losses.sum(), [params[k] for k in keys])
            out.append(dict(zip(keys, g)))
    return out


def dot(g: dict, d: dict) -> float:
    return float(sum((g[k] * d[k]).sum() for k in g))


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max())


def snapshot(lin: Lineage) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": v.detach().clone() for n in lin.names for k, v in lin[n].state_dict().items()}


def assert_unchanged(lin: Lineage, before: dict[str, torch.Tensor], x: Inputs, logits_before: torch.Tensor) -> None:
    after = snapshot(lin)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in lin["base"].parameters())
    # the live parameters are still the model's own objects (the functional_call alias trap swaps
    # them for equal-valued tensors, which a value comparison alone would miss)
    live = dict(lin["base"].named_parameters(remove_duplicate=False))
    assert all(live[n] is p for k, p in lin.params("base").items() for n in lin.actual_names("base")[k])
    with torch.no_grad():
        assert torch.equal(lin["base"](x.tokens), logits_before)


@pytest.mark.parametrize(("kind", "backend", "method"), [
    ("hard", "functional", "auto"), ("soft", "functional", "auto"), ("hard", "functional", "func"),
    ("soft", "functional", "func"), ("hard", "bridge", "auto"),
])
def test_scores_match_naive_loop_and_leave_models_unchanged(lin64, rows, kind, backend, method):
    """auto = the hand-written tangents (workbench.engines.tangent) on the functional backend, torch.func.jvp on the bridge."""
    before = snapshot(lin64)
    with torch.no_grad():
        logits_before = lin64["base"](rows.tokens)
    model = AlignmentModel(lin64, backend=backend)
    objective = objective_for(kind, lin64)
    d_T = lin64.delta("teacher")
    d_R = random_direction(d_T, seed=3)
    dirs = {"delta_T": d_T, "random": d_R}
    ref_grads = naive_grads(lin64, kind, rows)
    assert_unchanged(lin64, before, rows, logits_before)

    for name, d in dirs.items():
        ref = torch.tensor([-dot(g, d) for g in ref_grads], dtype=torch.float64)
        got = alignment_scores(model, rows, d, objective, batch_size=4, method=method)  # two batches
        assert rel_err(got.total, ref) <= TOL
        assert torch.allclose(got.per_token.sum(-1), got.total)
        assert_unchanged(lin64, before, rows, logits_before)

    gs = group_scores(model, rows, dirs, objective, batch_size=3)
    assert_unchanged(lin64, before, rows, logits_before)
    groups = lin64.groups()
    for name, d in dirs.items():
        ref_groups = torch.tensor([[-sum(float((g[k] * d[k]).sum()) for k in grp.keys) for grp in groups] for g in ref_grads])
        assert rel_err(gs.by_direction[name], ref_groups) <= TOL
        ref_total = torch.tensor([-dot(g, d) for g in ref_grads], dtype=torch.float64)
        assert rel_err(gs.total(name), ref_total) <= TOL  # groups sum to a_i
    ref_norm = torch.tensor([sum(float((v**2).sum()) for v in g.values()) ** 0.5 for g in ref_grads])
    ref_norm_ex = torch.tensor([sum(float((v**2).sum()) for k, v in g.items() if not k.startswith("unembed.")) ** 0.5
                                for g in ref_grads])
    assert rel_err(gs.grad_norm, ref_norm) <= TOL and rel_err(gs.grad_norm_excluding, ref_norm_ex) <= TOL
    cos = gs.cosine("delta_T", d_T)
    ref_cos = torch.tensor([-dot(g, d_T) for g in ref_grads]) / (ref_norm * sum(float((v**2).sum()) for v in d_T.values()) ** 0.5)
    assert rel_err(cos, ref_cos) <= TOL


@pytest.mark.parametrize("kind", ["hard", "hard_renorm", "soft"])
def test_per_token_scores_match_naive_loop(lin64, rows, kind):
    x = rows.select([0, 5])
    model = AlignmentModel(lin64)
    d = lin64.delta("teacher")
    ref_rows = naive_grads(lin64, kind, x, per_token=True)
    ref = torch.tensor([[0.0 if g is None else -dot(g, d) for g in row] for row in ref_rows])
    got = alignment_scores(model, x, d, objective_for(kind, lin64)).per_token
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= TOL


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_path_scores_match_naive_loop_at_each_point(lin64, rows, kind):
    """Path scores = sum_k w_k * (naive score at base + s_k d), per row and per group."""
    x = rows.select([1, 4])
    model = AlignmentModel(lin64)
    objective = objective_for(kind, lin64)
    d = lin64.delta("teacher")
    nodes, weights = quadrature(3)
    params = lin64.params("base")
    base = {k: p.detach().clone() for k, p in params.items()}
    ref = torch.zeros(len(x))
    ref_groups = torch.zeros(len(x), len(lin64.groups()))
    try:
        for s, w in zip(nodes, weights):
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(base[k] + float(s) * d[k])
            for i, g in enumerate(naive_grads(lin64, kind, x)):
                ref[i] += w * -dot(g, d)
                for j, grp in enumerate(lin64.groups()):
                    ref_groups[i, j] += w * -sum(float((g[k] * d[k]).sum()) for k in grp.keys)
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(base[k])
    got = path_scores(model, x, d, objective, points=3)
    assert rel_err(got.total, ref) <= TOL
    pg = group_scores(model, x, {"d": d}, objective, weights=list(zip(nodes.tolist(), weights.tolist())))
    assert rel_err(pg.by_direction["d"], ref_groups) <= TOL


def test_path_integral_is_the_log_likelihood_ratio(lin64, rows):
    """Hard loss, d = teacher delta: the path integral (and its per-group split) sums to
    log p_teacher(x) - log p_base(x) within 1% at K = 8."""
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    rows = rows.select([0, 1, 4, 5])
    llr = sequence_losses(model, rows, hard) - sequence_losses(model, rows, hard, model.params_of("teacher"))
    d = lin64.delta("teacher")
    path = path_scores(model, rows, d, hard, points=8)
    assert rel_err(path.total, llr) <= 0.01
    nodes, weights = quadrature(8)
    pg = group_scores(model, rows, {"d": d}, hard, weights=list(zip(nodes.tolist(), weights.tolist())))
    assert rel_err(pg.total("d"), llr) <= 0.01
    # the plain score is only a first-order approximation: clearly worse than the path integral
    plain = alignment_scores(model, rows, d, hard).total
    assert rel_err(plain, llr) > 10 * rel_err(path.total, llr)


def test_planted_direction_is_localised_to_its_group(lin64, tiny_organism):
    """d = the data's mean descent direction restricted to one group, plus random noise of the same
    norm in every other group: the mean per-group score singles out the planted group."""
    x = Inputs.from_jsonl(tiny_organism.directory / "data" / "teacher.jsonl", limit=32)
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    params = dict(model.params)
    mean_grad = torch.func.grad(lambda p: mean_loss(model, p, x, hard))(params)
    planted = lin64.group("blocks.0.mlp.in")
    signal = only({k: -v for k, v in mean_grad.items()}, planted.keys)
    noise = without(random_direction(params, seed=1), planted.keys)
    noise_scale = sum(float((v**2).sum()) for v in signal.values()) ** 0.5 / max(
        sum(float((v**2).sum()) for v in noise.values()) ** 0.5, 1e-30)
    d = {k: signal[k] + noise_scale * noise[k] for k in params}
    gs = group_scores(model, x, {"d": d}, hard, batch_size=16)
    mean = gs.by_direction["d"].mean(0)
    names = [g.name for g in lin64.groups()]
    assert names[int(mean.argmax())] == planted.name
    others = torch.cat([mean[: names.index(planted.name)], mean[names.index(planted.name) + 1 :]])
    assert float(mean.max()) > 5 * float(others.abs().max())


def mean_loss(model, params, x, objective):
    """Mean over rows of L_i at `params` (differentiable)."""

    total = 0
    for batch in iter_batches(model, objective, x, 256):
        total = total + per_token_losses(model, params, objective, batch).sum()
    return total / len(x)


def test_trait_gradient_matches_finite_differences(lin64):
    model = AlignmentModel(lin64)
    trait = organism_trait(lin64.tokenizer, "owl")
    g = trait_gradient(model, trait)
    d = random_direction(g, seed=0, scale=1.0)
    h = 1e-5
    plus = {k: v + h * d[k] for k, v in model.params.items()}
    minus = {k: v - h * d[k] for k, v in model.params.items()}
    with torch.no_grad():
        fd = (trait_log_prob(model, plus, trait) - trait_log_prob(model, minus, trait)) / (2 * h)
    assert float(fd) == pytest.approx(sum(float((g[k] * d[k]).sum()) for k in g), rel=1e-6)
    assert all(float(v.abs().max()) == 0 for k, v in without(g, ("unembed.",)).items() if k.startswith("unembed."))


def test_first_order_prediction_holds_at_small_eta(lin64, tiny_organism):
    x = Inputs.from_jsonl(tiny_organism.directory / "data" / "teacher.jsonl", limit=32)
    rows = first_order_prediction(AlignmentModel(lin64), x, Objective("hard"), organism_trait(lin64.tokenizer, "owl"),
                                  etas=(1e-5, 1e-4), batch_size=16, n_batches=2)
    assert [r.eta for r in rows] == [1e-5, 1e-4]
    for r in rows:
        assert len(r.predicted) == 2 and r.sign_agreement == 1.0
        assert r.relative_error < 0.01
    assert rows[0].relative_error < rows[1].relative_error  # second-order error shrinks with eta


def test_losses_agree_with_the_organism_training_losses(tiny_organism):
    """Mean of our per-token losses = the organism's training losses (float32)."""
    lin = load_lineage(tiny_organism.directory, roles=["base", "teacher"])
    x = Inputs.from_jsonl(tiny_organism.directory / "data" / "teacher.jsonl", limit=8)
    model = AlignmentModel(lin)
    mask = x.next_token_mask().float()
    logits = model.logits(model.params, x.tokens)
    hard = Objective("hard").per_token(logits, x.tokens, mask, None)
    full_mask = torch.cat([mask, torch.zeros(len(x), 1)], 1).bool()
    assert float(hard.sum() / mask.sum()) == pytest.approx(float(next_token_loss(logits, x.tokens, full_mask)), rel=1e-5)
    ids = torch.tensor(lin.tokenizer.number_channel_ids)
    renorm = Objective("hard", ids=ids)
    pos_all = mask[0].nonzero().flatten()
    ours = renorm.per_token(logits, x.tokens, mask, renorm.targets(model, x.tokens, mask))[:, pos_all].mean()
    theirs = hard_distill_loss(logits[:, pos_all], x.tokens[:, pos_all + 1], ids)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    soft = Objective("soft", ids=ids, teacher=model.params_of("teacher"))
    targets = soft.targets(model, x.tokens)
    pos = mask[0].nonzero().flatten()
    ours = soft.per_token(logits, x.tokens, mask, targets)[:, pos].mean()
    teacher_logp = restricted_log_probs(model.logits(soft.teacher, x.tokens)[:, pos], ids)
    assert float(ours) == pytest.approx(float(soft_distill_loss(logits[:, pos], teacher_logp, ids)), rel=1e-5)


def test_bad_inputs_give_clear_errors(lin64, rows):
    model = AlignmentModel(lin64)
    d = lin64.delta("teacher")
    with pytest.raises(UnknownNameError, match="blocks.0.attn.q.weigth"):
        alignment_scores(model, rows, {"blocks.0.attn.q.weigth": d["blocks.0.attn.q.weight"]}, Objective())
    with pytest.raises(DataError, match="shape"):
        alignment_scores(model, rows, {"embed.weight": torch.zeros(3, 3)}, Objective())
    with pytest.raises(ConfigError, match="teacher"):
        Objective("soft")
    with pytest.raises(UnknownNameError, match="loss"):
        Objective("medium")
    with pytest.raises(ConfigError, match="at least one point"):
        quadrature(0)
    bad = Inputs.from_sequences([[1, 2]], [[10_000]], sources="teacher")
    with pytest.raises(DataError, match="outside the vocabulary"):
        alignment_scores(model, bad, d, Objective())


def test_quadrature_rules():
    nodes, weights = quadrature(1)
    assert nodes.tolist() == [0.5] and weights.tolist() == [1.0]
    nodes, weights = quadrature(1, "left")
    assert nodes.tolist() == [0.0]
    nodes, weights = quadrature(5)
    assert np.isclose(weights.sum(), 1.0) and np.isclose((weights * nodes**9).sum(), 0.1)  # exact to degree 9
