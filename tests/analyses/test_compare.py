"""Activation comparison: a planted residual shift is found where it was planted, and nowhere before."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.analyses.activation_shifts import CompareConfig, compare
from workbench.analyses.compare import residual_hooks
from workbench.analyses.logit_lens import logit_lens
from workbench.analyses.shift_results import ActivationComparison, SeedAggregate, aggregate_seeds
from workbench.capture.capture import capture
from workbench.core.errors import IncompatibleModelsError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native, clean_state_dict

CFG = dict(n_layers=3, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=24, n_ctx=12, act_fn="gelu",
           normalization_type="LN", seed=0)
LAYER, TOKEN = 1, 7


def planted(base, shift: torch.Tensor, layer: int = LAYER):
    """A copy of `base` whose residual stream gets `shift` added at the end of block `layer`."""
    state = clean_state_dict(base)
    state[f"blocks.{layer}.mlp.out.bias"] = state[f"blocks.{layer}.mlp.out.bias"] + shift
    return boot_native(CFG, state_dict=state)


@pytest.fixture(scope="module")
def planted_lineage():
    base = boot_native(CFG)
    w_u = base.state_dict()["unembed.weight"]
    u = 4.0 * w_u[TOKEN] / w_u[TOKEN].norm()  # promotes TOKEN through the unembedding
    g = torch.Generator().manual_seed(1)
    w = torch.randn(CFG["d_model"], generator=g)
    w = 4.0 * (w - (w @ u) / (u @ u) * u) / (w - (w @ u) / (u @ u) * u).norm()  # orthogonal to u
    models = {"base": base, "teacher": planted(base, u), "student": planted(base, u), "control": planted(base, w)}
    return Lineage.from_models(models), u, w


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 24, (4,), generator=g).tolist() for _ in range(40)]
    completions = [torch.randint(1, 24, (5,), generator=g).tolist() for _ in range(40)]
    return Inputs.from_sequences(prompts, completions, "test")


@pytest.fixture(scope="module")
def result(planted_lineage, inputs, tmp_path_factory):
    lin, _, _ = planted_lineage
    store = capture(lin, inputs, residual_hooks(3), positions="mean", out_dir=tmp_path_factory.mktemp("acts"),
                    batch_size=16, progress=False)
    return compare(lin, store, CompareConfig(n_bootstrap=200), meta={"seed": 0})


def test_planted_shift_shows_at_its_layer_and_after_and_nowhere_before(result, planted_lineage):
    _, u, w = planted_lineage
    at = result.hooks.index(f"blocks.{LAYER}.hook_resid_post")
    assert result.hooks == residual_hooks(3)
    for m in ("teacher", "student", "control"):
        assert all(x < 1e-6 for x in result.rel_norm[m][:at]), (m, result.rel_norm[m])
        assert all(x > 0.05 for x in result.rel_norm[m][at:]), (m, result.rel_norm[m])
    torch.testing.assert_close(result.shifts[f"teacher|blocks.{LAYER}.hook_resid_post"], u, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.shifts[f"control|blocks.{LAYER}.hook_resid_post"], w, atol=1e-4, rtol=1e-4)
    student, control = result.cos["student~teacher"], result.cos["control~teacher"]
    assert all(math.isnan(c) for c in student[:at])  # no shift, no direction
    assert all(c > 0.9999 for c in student[at:])
    assert abs(control[at]) < 1e-3
    # intervals: a model identical to the teacher is aligned in every resample
    assert result.cos_lo["student~teacher"][at] > 0.9999
    for p in result.pairs:
        for c, lo, hi in zip(result.cos[p][at:], result.cos_lo[p][at:], result.cos_hi[p][at:]):
            assert lo - 1e-6 <= c <= hi + 1e-6 or abs(hi - lo) < 0.2
    assert "student~teacher" in result.pairs and "other~teacher" not in result.pairs  # absent models skipped


def test_logit_lens_reads_the_planted_token(result):
    at = result.hooks.index(f"blocks.{LAYER}.hook_resid_post")
    assert result.lens["teacher"][at]["top_ids"][0] == TOKEN
    assert result.lens["teacher"][0] is not None
    assert "target_rank" not in result.lens["teacher"][at] and result.meta["target"] is None  # no trait given


def test_logit_lens_reports_the_traits_target(planted_lineage, inputs, tmp_path):
    from workbench.trait import Trait

    lin, _, _ = planted_lineage
    store = capture(lin, inputs, residual_hooks(3), positions="mean", out_dir=tmp_path, batch_size=16, progress=False)
    trait = Trait.from_prompts([[1, 2]], target="planted", category="tokens", answers={"planted": [TOKEN], "other": [3]})
    r = compare(lin, store, CompareConfig(n_bootstrap=20), trait=trait)
    at = r.hooks.index(f"blocks.{LAYER}.hook_resid_post")
    assert r.lens["teacher"][at]["target_rank"] == 1 and r.lens["teacher"][at]["target_delta"] > 0
    assert r.meta["target"] == "planted" and "logit_lens_target" in r.figures()


def test_logit_lens_is_the_linearised_layernorm():
    g = torch.Generator().manual_seed(0)
    d, vocab = 16, 10
    a = torch.randn(d, generator=g) * 3
    v = torch.randn(d, generator=g) * 1e-3
    gamma, w_u = torch.rand(d, generator=g) + 0.5, torch.randn(vocab, d, generator=g)
    ln = torch.nn.functional.layer_norm
    exact = w_u @ (ln(a + v, (d,), gamma, None, 1e-5) - ln(a, (d,), gamma, None, 1e-5))
    scale = float(a.var(unbiased=False).add(1e-5).sqrt())
    approx = logit_lens(v, gamma, w_u, scale)
    # equal up to the ignored change of scale (small for a small shift) and the vocabulary mean
    assert torch.corrcoef(torch.stack([exact - exact.mean(), approx]))[0, 1] > 0.95


def test_all_positions_reduce_like_mean(planted_lineage, inputs, result, tmp_path):
    lin, _, _ = planted_lineage
    store = capture(lin, inputs, residual_hooks(3), positions="all", out_dir=tmp_path, batch_size=16, progress=False)
    again = compare(lin, store, CompareConfig(n_bootstrap=200))
    for p in result.pairs:
        np.testing.assert_allclose(again.cos[p], result.cos[p], atol=1e-4)


def test_save_load_figures_and_summary(result, tmp_path):
    result.save(tmp_path)
    loaded = ActivationComparison.load(tmp_path)
    assert loaded.cos.keys() == result.cos.keys() and loaded.hooks == result.hooks
    np.testing.assert_allclose(loaded.rel_norm["teacher"], result.rel_norm["teacher"])
    assert torch.equal(loaded.shifts["teacher|blocks.1.hook_resid_post"], result.shifts["teacher|blocks.1.hook_resid_post"])
    figs = loaded.figures()
    assert {"alignment", "shift_norms"} <= set(figs)
    assert len(figs["alignment"].data[1].x) == 2 * len(result.hooks)  # shaded interval band (after the null band)
    rows = [r.to_dict() for r in loaded.summary_rows()]
    assert [r["where"] for r in rows] == result.hooks
    at = result.hooks.index(f"blocks.{LAYER}.hook_resid_post")
    row = rows[at]  # the planted hook: the student's shift is the teacher's, the control's orthogonal to it
    assert row["value"] > 0.9999 and abs(row["control_value"]) < 1e-3 and row["control"] == "control student"
    assert row["ci"][0] <= row["value"] <= row["ci"][1] + 1e-6 and "rel_norm student" in row
    assert math.isnan(rows[0]["value"])  # before the plant: no shift, no direction


def test_aggregate_seeds_is_mean_and_spread_over_seeds(result, tmp_path):
    other = ActivationComparison.load(result.save(tmp_path / "a").parent)
    other.cos = {p: [c * 0.5 for c in v] for p, v in other.cos.items()}
    other.meta = {**other.meta, "seed": 1}
    agg = aggregate_seeds([result, other])
    i = result.hooks.index("blocks.2.hook_resid_post")
    pair = "control~teacher"
    vals = [result.cos[pair][i], other.cos[pair][i]]
    assert agg.seeds == [0, 1]
    assert agg.mean(pair)[i] == pytest.approx(np.mean(vals))
    assert agg.std(pair)[i] == pytest.approx(np.std(vals, ddof=1))
    agg.save(tmp_path / "agg")
    np.testing.assert_equal(SeedAggregate.load(tmp_path / "agg").values, agg.values)
    assert "student~teacher" in agg.table() and set(agg.figures()) == {"alignment", "shift_norms"}


def test_lineage_that_was_not_captured_is_refused(planted_lineage, inputs, tmp_path):
    lin, u, _ = planted_lineage
    store = capture(lin, inputs, ["blocks.0.hook_resid_post"], positions="last", out_dir=tmp_path, progress=False)
    wrong = Lineage.from_models({"base": lin["base"], "teacher": planted(lin["base"], 2 * u),
                                 "student": lin["student"], "control": lin["control"]})
    with pytest.raises(IncompatibleModelsError, match="teacher"):
        compare(wrong, store, CompareConfig(n_bootstrap=10))
