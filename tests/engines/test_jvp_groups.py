"""Forward-mode passes under a memory budget (`jvp_scores` split by groups of keys): by linearity
the sum of per-group jvps equals the single jvp (float64, 1e-10), on the tiny organism (both
methods) and on a toy Hugging Face Qwen2; the alignment tables are the same with and without
the split; a budget above the model's bytes keeps the single pass."""

from __future__ import annotations

import pytest
import torch

import workbench.engines.per_example as pe
from workbench.analyses.alignment import AlignmentConfig, run_alignment
from workbench.analyses.param_directions import random_direction
from workbench.analyses.path_scores import path_scores
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.toy_hf import ToySpec, write_toy_lineage
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective, iter_batches
from workbench.engines.per_example import alignment_scores, jvp_scores, tangent_groups
from workbench.organism.load import load_lineage

TOL = 1e-10


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max())


def small_budget(model: AlignmentModel) -> int:
    """The largest key's bytes: every other key packs beside it, so the tangent splits in several groups."""
    return max(v.numel() * v.element_size() for v in model.params.values())


def test_tangent_groups_pack_keys_in_order_within_the_budget():
    at = {"a": torch.zeros(10), "b": torch.zeros(5), "c": torch.zeros(3), "d": torch.zeros(20)}  # float32: 4 B each
    assert tangent_groups(at, None) == [("a", "b", "c", "d")]
    assert tangent_groups(at, 38 * 4) == [("a", "b", "c", "d")]  # the whole model fits: one pass
    assert tangent_groups(at, 18 * 4) == [("a", "b", "c"), ("d",)]  # d alone is over the budget: a group of its own
    assert tangent_groups(at, 12 * 4) == [("a",), ("b", "c"), ("d",)]
    with pytest.raises(ConfigError, match="memory_budget_bytes=0"):
        tangent_groups(at, 0)


@pytest.fixture(scope="module")
def lin64(tiny_organism):
    return load_lineage(tiny_organism.directory, roles=["base", "teacher"], dtype=torch.float64)


@pytest.mark.parametrize("method", ["explicit", "func"])
def test_grouped_jvp_equals_the_single_jvp_on_the_organism(lin64, distill_rows, method):
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    budget = small_budget(model)
    assert len(tangent_groups(model.params, budget)) >= 3
    for direction in (lin64.delta_view("teacher"), random_direction(model.params, seed=5, scale=1.0)):
        d = check_direction(model, direction)
        for batch in iter_batches(model, hard, distill_rows, 4, False, ""):
            single = jvp_scores(model, hard, batch, model.params, d, method)
            split = jvp_scores(model, hard, batch, model.params, d, method, memory_budget_bytes=budget)
            assert rel_err(split, single) <= TOL
    p1 = path_scores(model, distill_rows, lin64.delta_view("teacher"), hard, points=2, batch_size=4, method=method)
    p2 = path_scores(model, distill_rows, lin64.delta_view("teacher"), hard, points=2, batch_size=4, method=method,
                     memory_budget_bytes=budget)
    assert rel_err(p2.per_token, p1.per_token) <= TOL


def test_a_budget_over_the_model_keeps_the_single_pass(lin64, distill_rows, monkeypatch):
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    whole = sum(v.numel() * v.element_size() for v in model.params.values())
    calls: list[object] = []
    real = pe._jvp
    monkeypatch.setattr(pe, "_jvp", lambda *a: calls.append(a[-1]) or real(*a))
    ref = alignment_scores(model, distill_rows, lin64.delta_view("teacher"), hard, batch_size=8)
    calls.clear()
    same = alignment_scores(model, distill_rows, lin64.delta_view("teacher"), hard, batch_size=8,
                            memory_budget_bytes=whole)
    assert calls == [None] and torch.equal(same.per_token, ref.per_token)  # bit-identical: the same single pass


@pytest.fixture(scope="module")
def toy_qwen(tmp_path_factory):
    toy = write_toy_lineage(tmp_path_factory.mktemp("qwen"), ToySpec(family="qwen2", lora_student=False, n_prompts=8))
    lin = Lineage.from_hf_dirs({k: toy.dirs[k] for k in ("base", "teacher")}, dtype=torch.float64)
    return lin, Inputs.from_jsonl(toy.data)


def test_grouped_jvp_equals_the_single_jvp_on_a_toy_qwen2(toy_qwen):
    lin, inputs = toy_qwen
    model = AlignmentModel(lin)
    assert model.backend == "bridge"  # torch.func.jvp through functional_call
    hard = Objective("hard")
    budget = small_budget(model)
    assert len(tangent_groups(model.params, budget)) >= 3
    rows = inputs.select(list(range(6)))
    d = lin.delta_view("teacher")
    ref = alignment_scores(model, rows, d, hard, batch_size=3)
    split = alignment_scores(model, rows, d, hard, batch_size=3, memory_budget_bytes=budget)
    assert rel_err(split.per_token, ref.per_token) <= TOL


def test_alignment_tables_do_not_change_with_the_split(toy_qwen):
    lin, inputs = toy_qwen
    model = AlignmentModel(lin)
    base = dict(student=None, max_rows_per_source=None, n_random=1, path_points=(2,), path_group_points=0,
                prediction_batches=0, batch_size=8, grad_batch_size=8)
    whole = run_alignment(lin, inputs, AlignmentConfig(**base, memory_budget_bytes=None))
    split = run_alignment(lin, inputs, AlignmentConfig(**base, memory_budget_bytes=small_budget(model)))
    assert split.path["auroc"] == whole.path["auroc"]
    assert split.path["completeness_rel_error"] == pytest.approx(whole.path["completeness_rel_error"], rel=1e-8, abs=1e-12)
    assert split.token_diff.keys() == whole.token_diff.keys()
    for name, values in whole.token_diff.items():
        assert split.token_diff[name] == pytest.approx(values, rel=1e-9, abs=1e-12)
    for key in ("path/delta_T/K2", "a/delta_T"):
        assert rel_err(split.scores[key], whole.scores[key]) <= TOL
    assert max(split.meta["jvp_vs_group_sum_rel_gap"], whole.meta["jvp_vs_group_sum_rel_gap"]) < 1e-6


def test_first_order_prediction_with_a_given_g_trait_and_a_split_jvp(lin64, distill_rows):
    from workbench.analyses.first_order import first_order_prediction
    from workbench.analyses.trait_gradient import trait_gradient
    from workbench.organism.trait import organism_trait

    model = AlignmentModel(lin64)
    trait = organism_trait(lin64.tokenizer, "owl")
    hard = Objective("hard")
    ref = first_order_prediction(model, distill_rows, hard, trait, (1e-3, 1e-1), batch_size=4, n_batches=2)
    got = first_order_prediction(model, distill_rows, hard, trait, (1e-3, 1e-1), batch_size=4, n_batches=2,
                                 g_trait=trait_gradient(model, trait), memory_budget_bytes=small_budget(model))
    for r, g in zip(ref, got):
        assert g.measured == r.measured  # the same steps, bit for bit (one reused buffer)
        assert g.predicted == pytest.approx(r.predicted, rel=1e-10)
