"""Per-example gradients under a memory budget (workbench.engines.grad_chunks): the plan splits
rows first, then keys, never past the budget; per-group scores and gradient norms through many
chunks equal a naive per-row backward loop (float64, 1e-10) and the unbudgeted single call."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.alignment_config import AlignmentConfig, parse_bytes
from workbench.analyses.group_scores import group_scores
from workbench.analyses.param_directions import random_direction
from workbench.cli.alignment import parser as alignment_parser
from workbench.core.errors import ConfigError
from workbench.core.inputs import Inputs
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.grad_chunks import grad_chunks, model_plan, plan_grad_chunks
from workbench.engines.objective import Objective, iter_batches, per_token_losses
from workbench.organism.load import load_lineage

TOL = 1e-10


@pytest.fixture(scope="module")
def lin64(tiny_organism):
    return load_lineage(tiny_organism.directory, roles=["base", "teacher"], dtype=torch.float64)


@pytest.fixture(scope="module")
def rows(distill_rows):
    return distill_rows


def test_plan_splits_rows_then_keys_within_the_budget():
    sizes = {"a": 100, "b": 50, "c": 30, "d": 20}  # 200 elements a row
    assert plan_grad_chunks(sizes, 4, 8, None)[0].rows == 8
    (one,) = plan_grad_chunks(sizes, 4, 8, 8 * 800)  # the whole batch fits: one call, every key
    assert one.keys == tuple(sizes) and one.rows == 8 and one.bytes == 6400
    (rows,) = plan_grad_chunks(sizes, 4, 8, 2500)  # 3 rows of the whole model fit
    assert rows.keys == tuple(sizes) and rows.rows == 3 and rows.bytes == 2400
    split = plan_grad_chunks(sizes, 4, 8, 600)  # one row of the model does not fit: keys split, 1 row
    assert [c.keys for c in split] == [("a", "b"), ("c", "d")] and all(c.rows == 1 for c in split)
    assert all(c.bytes <= 600 for c in split)
    assert [k for c in split for k in c.keys] == list(sizes)
    with pytest.raises(ConfigError, match=r"'a' \(400 bytes\)"):
        plan_grad_chunks(sizes, 4, 8, 399)
    with pytest.raises(ConfigError, match="positive"):
        plan_grad_chunks(sizes, 4, 8, 0)


def naive_grads(lin, x: Inputs) -> list[dict[str, torch.Tensor]]:
    """One backward per row through the live bridge (full-vocabulary cross-entropy on the mask)."""
    params = lin.params("base")
    mask = x.next_token_mask().double()
    out = []
    for i in range(len(x)):
        logits = lin["base"](x.tokens[i][None])[0, :-1]
        loss = (torch.nn.functional.cross_entropy(logits, x.tokens[i, 1:], reduction="none") * mask[i]).sum()
        out.append(dict(zip(params, torch.autograd.grad(loss, list(params.values())))))
    return out


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("backend", ["functional", "bridge"])
def test_budgeted_group_scores_match_the_naive_loop(lin64, rows, backend):
    model = AlignmentModel(lin64, backend=backend)
    hard = Objective("hard")
    dirs = {"delta_T": lin64.delta("teacher"), "random": random_direction(lin64.delta("teacher"), seed=3)}
    sizes = {k: v.numel() for k, v in model.params.items()}
    per_row = sum(sizes.values()) * 8
    budget = max(sizes.values()) * 8 + 1  # one row of the largest key: keys split into many calls
    plan = model_plan(model, model.params, 4, budget)
    assert len(plan) >= 3 and all(c.rows == 1 and c.bytes <= budget for c in plan)
    ref = naive_grads(lin64, rows)
    groups = lin64.groups()
    unbudgeted = group_scores(model, rows, dirs, hard, batch_size=4)
    for b in (budget, 2 * per_row + 7, None):  # keys split; 2 rows a call; one call
        gs = group_scores(model, rows, dirs, hard, batch_size=4, memory_budget_bytes=b)
        for name, d in dirs.items():
            want = torch.tensor([[-sum(float((g[k] * d[k]).sum()) for k in grp.keys) for grp in groups] for g in ref],
                                dtype=torch.float64)
            assert rel_err(gs.by_direction[name], want) <= TOL
            assert rel_err(gs.by_direction[name], unbudgeted.by_direction[name]) <= TOL
        want_norm = torch.tensor([sum(float((v**2).sum()) for v in g.values()) ** 0.5 for g in ref],
                                 dtype=torch.float64)
        want_ex = torch.tensor([sum(float((v**2).sum()) for k, v in g.items() if not k.startswith("unembed.")) ** 0.5
                                for g in ref], dtype=torch.float64)
        assert rel_err(gs.grad_norm, want_norm) <= TOL and rel_err(gs.grad_norm_excluding, want_ex) <= TOL


def test_path_integrated_group_scores_under_a_budget(lin64, rows):
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    d = {"d": lin64.delta("teacher")}
    points = [(0.2, 0.5), (0.8, 0.5)]
    small = max(v.numel() for v in model.params.values()) * 8
    full = group_scores(model, rows, d, hard, weights=points, batch_size=4)
    split = group_scores(model, rows, d, hard, weights=points, batch_size=4, memory_budget_bytes=small)
    assert rel_err(split.by_direction["d"], full.by_direction["d"]) <= TOL


def test_chunks_cover_every_row_and_key_once(lin64, rows):
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    (batch,) = iter_batches(model, hard, rows, 16)
    plan = model_plan(model, model.params, len(rows), max(v.numel() for v in model.params.values()) * 8)
    seen: dict[str, set[int]] = {}
    for part, grads in grad_chunks(model, hard, batch, model.params, plan):
        for k, g in grads.items():
            assert g.shape[0] == part.stop - part.start
            seen.setdefault(k, set()).update(range(part.start, part.stop))
    assert seen.keys() == model.params.keys() and all(s == set(range(len(rows))) for s in seen.values())
    # a restricted call's gradient is the full call's for those keys
    full = dict(next(grad_chunks(model, hard, batch, model.params, model_plan(model, model.params, len(rows), None)))[1])
    part, grads = next(grad_chunks(model, hard, batch, model.params, plan))
    for k, g in grads.items():
        assert torch.allclose(g, full[k][part], rtol=0, atol=1e-12)
    assert per_token_losses(model, model.params, hard, batch).shape[0] == len(rows)


def test_budget_flag_and_config():
    assert parse_bytes("2GiB") == 2**31 and parse_bytes("512MiB") == 2**29 and parse_bytes("1e9") == 10**9
    assert parse_bytes("4096") == 4096 and parse_bytes("none") is None
    for bad in ("3x", "-1", "0"):
        with pytest.raises(ConfigError, match="budget"):
            parse_bytes(bad)
    args = alignment_parser().parse_args(["--memory-budget", "64MiB"])
    assert args.memory_budget_bytes == 64 * 2**20
    assert alignment_parser().parse_args([]).memory_budget_bytes == AlignmentConfig().memory_budget_bytes == 2**31
    with pytest.raises(ConfigError, match="memory_budget_bytes=0"):
        AlignmentConfig(memory_budget_bytes=0).validate()
