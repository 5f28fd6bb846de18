"""Weight deltas: exact against a naive reference, a planted one-group delta, controls, errors."""

import pytest
import torch

from workbench.core.errors import ConfigError, UnknownNameError
from workbench.core.lineage import Lineage
from workbench.organism.load import load_lineage
from workbench.core.models import copy_model
from workbench.analyses.weights import WHOLE, WeightConfig, WeightDeltaResult, subspace_overlap, weight_deltas


@pytest.fixture(scope="module")
def lin(tiny_organism):
    return load_lineage(tiny_organism.directory)


@pytest.fixture(scope="module")
def result(lin):
    return weight_deltas(lin)


def _flat_delta(a, b):
    """Naive reference through the wrapped modules' own parameters (not the clean key space)."""
    pb = dict(b.named_parameters())
    return torch.cat([(p - pb[n]).detach().reshape(-1).double() for n, p in a.named_parameters()])


def test_whole_model_cosine_matches_naive_reference(lin, result):
    t = _flat_delta(lin["teacher"], lin["base"])
    for m in ("student", "control", "other"):
        d = _flat_delta(lin[m], lin["base"])
        assert result.value(m) == pytest.approx(float(d @ t / (d.norm() * t.norm())), abs=1e-6)
        assert result.value(m, metric="proj") == pytest.approx(float(d @ t / (t @ t)), abs=1e-6)
        assert result.value(m, metric="norm") == pytest.approx(float(d.norm()), rel=1e-6)


def test_student_aligns_beyond_its_controls(result):
    s, c, o = (result.value(m) for m in ("student", "control", "other"))
    assert s > 0.1 and s > c + 0.1 and s > o + 0.1


def test_planted_single_group_delta(lin):
    """base + 2 x ΔT on one group only: cos 1 and projection 2 there, zero delta elsewhere."""
    group = lin.group("blocks.0.mlp.out")
    planted = copy_model(lin["base"])
    params, teacher, base = dict(planted.state_dict()), lin.state("teacher"), lin.state("base")
    for k in group.keys:
        params[k] = base[k] + 2 * (teacher[k] - base[k])
    planted.load_state_dict(params)
    lin2 = Lineage.from_models({n: lin[n] for n in ("base", "teacher")})
    lin2.add("planted", planted, role="student", parent="base")
    result = weight_deltas(lin2, WeightConfig(models=("planted",), baseline="planted", top_k=2))
    row = next(r for r in result.rows if r["group"] == group.name)
    assert row["cos"] == pytest.approx(1.0, abs=1e-5) and row["proj"] == pytest.approx(2.0, rel=1e-4)
    assert row["overlap_out"] == pytest.approx(1.0, abs=1e-5) and row["overlap_in"] == pytest.approx(1.0, abs=1e-5)
    others = [r for r in result.rows if r["group"] not in (group.name, WHOLE)]
    assert all(r["norm"] == 0 and r["cos"] is None for r in others)
    t_group = sum(float((teacher[k] - base[k]).double().norm() ** 2) for k in group.keys) ** 0.5
    t_all = sum(float((teacher[k] - base[k]).double().norm() ** 2) for k in lin.keys) ** 0.5
    assert result.value("planted") == pytest.approx(t_group / t_all, rel=1e-5)


def test_subspace_overlap_identical_orthogonal_and_chance():
    a = torch.zeros(6, 5)
    a[0, 0], a[1, 1] = 3.0, 2.0
    b = torch.zeros(6, 5)
    b[2, 2], b[3, 3] = 1.0, 1.0
    same = subspace_overlap(a, a, 2)
    assert same["overlap_out"] == pytest.approx(1.0) and same["overlap_in"] == pytest.approx(1.0)
    ortho = subspace_overlap(a, b, 2)
    assert ortho["overlap_out"] == pytest.approx(0.0, abs=1e-12) and ortho["chance_out"] == pytest.approx(2 / 6)


def test_cross_init_student_is_refused(lin):
    with pytest.raises(ConfigError, match="other coordinates"):
        weight_deltas(lin, WeightConfig(models=("student", "cross")))
    with pytest.raises(UnknownNameError, match="studnet"):
        weight_deltas(lin, WeightConfig(models=("studnet",)))


def test_result_contract_round_trip(result, tmp_path):
    result.save(tmp_path)
    loaded = WeightDeltaResult.load(tmp_path)
    assert loaded.rows == result.rows and loaded.config == result.config
    figs = loaded.figures()
    assert set(figs) == {"alignment_heatmap", "alignment_whole"}
    heat = figs["alignment_heatmap"].data[0]
    assert list(heat.y) == ["embed", "layer 0", "final"]
    rows = [r.to_dict() for r in loaded.summary_rows()]
    assert [r["where"] for r in rows] == [*result.groups(), WHOLE]  # one row per group, then the whole model
    whole = rows[-1]
    assert whole["value"] == result.value("student") and whole["control_value"] == result.value("control")
    assert whole["control"] == "control student" and whole["cos other"] == result.value("other")
    mlp = rows[result.groups().index("blocks.0.mlp.out")]
    assert mlp["value"] == result.value("student", "blocks.0.mlp.out") and "chance_out" in mlp
