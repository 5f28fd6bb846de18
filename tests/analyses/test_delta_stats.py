"""Streaming weight deltas: equal to the whole-model computation (a naive reference) in float64,
chunked sums and Gram-matrix subspaces equal the direct ones, LoRA factor identities exact."""

import pytest
import torch

from workbench.analyses import delta_stats as stats
from workbench.analyses.weights import WHOLE, WeightConfig, weight_deltas
from workbench.core.lineage import Lineage
from workbench.core.lora import LoraFactor
from workbench.core.models import boot_native

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=40, n_ctx=8, act_fn="gelu",
           normalization_type="LN")


@pytest.fixture(scope="module")
def lin64():
    roles = ("base", "teacher", "student", "control", "other")
    return Lineage.from_models({r: boot_native({**CFG, "seed": i}, dtype=torch.float64) for i, r in enumerate(roles)})


def _naive(lin, cfg):
    """The previous whole-model computation: a dict of every delta, flat float64 concatenations,
    an exact SVD per weight matrix (recomputed for every model)."""
    base = lin.parent_of(cfg.reference)
    ref = lin.delta(cfg.reference, base)
    deltas = {m: lin.delta(m, base) for m in cfg.models}

    def flat(d, keys):
        return torch.cat([d[k].reshape(-1).double() for k in keys])

    def align(a, t):
        na, nt, dot = float(a.norm()), float(t.norm()), float(a @ t)
        return {"norm": na, "ref_norm": nt, "cos": dot / (na * nt) if na * nt > 0 else None,
                "proj": dot / nt**2 if nt > 0 else None}

    def overlap(a, t, k):
        ua, _, vha = torch.linalg.svd(a.double(), full_matrices=False)
        ut, _, vht = torch.linalg.svd(t.double(), full_matrices=False)
        out = torch.linalg.svdvals(ua[:, :k].T @ ut[:, :k])
        inp = torch.linalg.svdvals(vha[:k] @ vht[:k].T)
        return {"overlap_out": float((out**2).mean()), "overlap_in": float((inp**2).mean())}

    rows = {}
    for g in lin.groups():
        mats = [k for k in g.keys if ref[k].ndim == 2]
        for m in cfg.models:
            row = align(flat(deltas[m], g.keys), flat(ref, g.keys))
            if len(mats) == 1:
                row.update(overlap(deltas[m][mats[0]], ref[mats[0]], min(cfg.top_k, *ref[mats[0]].shape)))
            rows[g.name, m] = row
    for m in cfg.models:
        rows[WHOLE, m] = align(flat(deltas[m], lin.keys), flat(ref, lin.keys))
    return rows


@pytest.mark.parametrize("chunk,exact_max", [(stats.CHUNK, stats.EXACT_SVD_MAX_NUMEL), (7, 0)])
def test_streaming_equals_whole_model_reference(lin64, monkeypatch, chunk, exact_max):
    """Float64 lineage: every row within 1e-10 of the naive computation, also with tiny chunks
    and every subspace from the Gram matrix (the large-matrix path)."""
    monkeypatch.setattr(stats, "CHUNK", chunk)
    monkeypatch.setattr(stats, "EXACT_SVD_MAX_NUMEL", exact_max)
    cfg = WeightConfig(models=("student", "control", "other"), top_k=3)
    naive = _naive(lin64, cfg)
    result = weight_deltas(lin64, cfg)
    assert len(result.rows) == len(naive)
    n_overlaps = 0
    for r in result.rows:
        want = naive[r["group"], r["model"]]
        for metric, value in want.items():
            if value is None:
                assert r[metric] is None, (r["group"], r["model"], metric)
                continue
            assert r[metric] == pytest.approx(value, rel=1e-10, abs=1e-10), (r["group"], r["model"], metric)
        n_overlaps += "overlap_out" in r
    assert n_overlaps == sum("overlap_out" in v for v in naive.values()) == 3 * 15  # 3 models x 15 matrix groups


def test_chunked_dot_and_norm(monkeypatch):
    monkeypatch.setattr(stats, "CHUNK", 5)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 9, generator=gen), torch.randn(7, 9, generator=gen)
    assert stats.dot(a, b) == pytest.approx(float((a.double() * b.double()).sum()), rel=1e-12)
    assert stats.sq_norm(a) == pytest.approx(float(a.double().norm() ** 2), rel=1e-12)


def _projector(u):
    return u @ u.T


@pytest.mark.parametrize("shape", [(30, 12), (12, 30)])
def test_gram_subspaces_equal_exact_svd(monkeypatch, shape):
    """Distinct singular values: the Gram path spans the exact SVD's top-k subspaces (both sides)."""
    gen = torch.Generator().manual_seed(1)
    q1, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=gen, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=gen, dtype=torch.float64))
    x = q1 @ torch.diag(torch.linspace(10, 1, min(shape), dtype=torch.float64)) @ q2.T
    exact = stats.top_subspaces(x, 4)
    monkeypatch.setattr(stats, "EXACT_SVD_MAX_NUMEL", 0)
    monkeypatch.setattr(stats, "CHUNK", 13)
    gram = stats.top_subspaces(x, 4)
    for e, g in zip(exact, gram):
        torch.testing.assert_close(_projector(g), _projector(e), atol=1e-10, rtol=0)


def _factor(d_out, d_in, r, transpose, seed, scaling=0.7):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
    b = torch.randn(d_out, r, generator=gen, dtype=torch.float64)
    return LoraFactor(A=a, B=b, scaling=scaling, transpose=transpose)


@pytest.mark.parametrize("transpose", [False, True])
def test_lora_factor_identities_exact(transpose):
    """<sBA, D>, <sBA, s'B'A'>, ||sBA||^2 and the top-k subspaces from the factors equal the
    materialised float64 product's."""
    f = _factor(20, 11, 4, transpose, seed=0)
    g = _factor(20, 11, 3, transpose, seed=1, scaling=2.0)
    full_f, full_g = f.delta(torch.float64), g.delta(torch.float64)
    assert stats.shape_of(f) == tuple(full_f.shape) == ((11, 20) if transpose else (20, 11))
    d = torch.randn(full_f.shape, generator=torch.Generator().manual_seed(2))
    assert stats.dot(f, d) == pytest.approx(float((full_f * d.double()).sum()), rel=1e-10)
    assert stats.dot(d, f) == pytest.approx(stats.dot(f, d), rel=1e-12)
    assert stats.dot(f, g) == pytest.approx(float((full_f * full_g).sum()), rel=1e-10)
    assert stats.sq_norm(f) == pytest.approx(float((full_f**2).sum()), rel=1e-10)
    for k in (2, 4, 6):  # 6 > rank: materialised
        for got, want in zip(stats.top_subspaces(f, k), stats.top_subspaces(full_f, k)):
            if k <= 4:
                torch.testing.assert_close(_projector(got), _projector(want), atol=1e-10, rtol=0)
            assert got.shape == want.shape


@pytest.mark.parametrize("shape", [(37, 11), (11, 37)])
def test_lazy_difference_equals_the_dense_delta(monkeypatch, shape):
    """A Difference (a - b subtracted chunk by chunk) gives bit-identical sums and subspaces to the
    dense a - b, with tiny chunks and on the Gram path as on the exact one."""
    gen = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(shape, generator=gen) for _ in range(3))
    lazy, dense = stats.Difference(a, b), a - b
    lazy_c = stats.Difference(c, b)
    for chunk, exact_max in [(stats.CHUNK, stats.EXACT_SVD_MAX_NUMEL), (13, 0)]:
        monkeypatch.setattr(stats, "CHUNK", chunk)
        monkeypatch.setattr(stats, "EXACT_SVD_MAX_NUMEL", exact_max)
        assert stats.sq_norm(lazy) == stats.sq_norm(dense)
        assert stats.dot(lazy, lazy_c) == stats.dot(dense, c - b)
        assert stats.dot(lazy, c - b) == stats.dot(dense, c - b)
        for got, want in zip(stats.top_subspaces(lazy, 3), stats.top_subspaces(dense, 3)):
            assert torch.equal(got, want)
        f = _factor(*shape, 2, False, seed=5)
        assert stats.dot(f, lazy) == stats.dot(f, dense)
