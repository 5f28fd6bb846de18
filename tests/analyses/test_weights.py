"""Weight deltas: exact against a naive reference, a planted one-group delta, controls, errors."""

import pytest
import torch

from workbench.core.errors import ConfigError, UnknownNameError
from workbench.core.lineage import Lineage
from workbench.organism.load import load_lineage
from workbench.core.models import copy_model
from workbench.analyses.weights import (
    WHOLE, WeightConfig, WeightDeltaResult, alignment, null_band, subspace_overlap, weight_deltas,
)


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


def _null_and_planted_result(sizes, per_size: int, seed: int = 0) -> WeightDeltaResult:
    """Rows of groups where ΔS, ΔC and ΔT are independent random directions (no signal), and one
    planted group (ΔS = ΔT / 2 + noise, ΔC = noise)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []

    def add(group, t, s, c):
        for model, d in (("student", s), ("control", c)):
            rows.append({"group": group, "layer": None, "component": group, "model": model, "numel": t.numel(),
                         **alignment(d, t)})

    for n in sizes:
        for i in range(per_size):
            t, s, c = (torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(3))
            add(f"null {n} {i}", t, s, c)
    t = torch.randn(256, generator=gen, dtype=torch.float64)
    add("planted", t, t / 2 + torch.randn(256, generator=gen, dtype=torch.float64), torch.randn(256, generator=gen))
    add(WHOLE, t, t, t)
    return WeightDeltaResult(command="test", config=WeightConfig(models=("student", "control")), base="base", rows=rows)


def test_clears_rule_false_clear_rate_on_null_groups():
    """Many groups with no signal: at most ~5% clear their control (the band is two standard
    deviations of the difference of two null cosines, sqrt(2) x a single cosine's); the old band
    for one cosine, applied to the difference, cleared more. A planted group still clears."""
    sizes = (16, 64, 256, 1024, 4096)
    summary = {r.where: r for r in _null_and_planted_result(sizes, per_size=400).summary_rows()}
    null = [r for g, r in summary.items() if g.startswith("null")]
    assert len(null) == 2000
    rates = {n: sum(r.clears for r in null if r.where.startswith(f"null {n} ")) / 400 for n in sizes}
    assert all(rate <= 0.07 for rate in rates.values()), rates  # one-sided 2 sd: 2.3% expected
    assert sum(r.clears for r in null) / len(null) <= 0.05
    assert all(r.details["null_band"] == pytest.approx(2 * (2 / int(r.where.split()[1])) ** 0.5) for r in null)
    old = sum(r.value - r.control_value > 2 / int(r.where.split()[1]) ** 0.5 for r in null) / len(null)
    assert old > 0.06  # ~7.9%: the single-cosine band on a difference
    assert summary["planted"].clears and summary["planted"].value > 0.3
    assert null_band(256) == pytest.approx(0.1767767)


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
