"""Directions made key by key when read (`LazyParams`): the same numbers as whole dicts, read only
when used, and bounded temporaries for large keys."""

from __future__ import annotations

import pytest
import torch

import workbench.analyses.group_scores as gs
import workbench.analyses.param_directions as pd
from workbench.analyses.group_scores import group_scores
from workbench.analyses.param_directions import norm, only, random_direction, without
from workbench.core.errors import ConfigError
from workbench.core.lazy_params import LazyParams, ReadCache
from workbench.engines.alignment_model import AlignmentModel, check_direction
from workbench.engines.objective import Objective
from workbench.organism.load import load_lineage


@pytest.fixture(scope="module")
def lin64(tiny_organism):
    return load_lineage(tiny_organism.directory, roles=["base", "teacher", "student", "base_x", "cross"], dtype=torch.float64)


class Counting(LazyParams):
    """A LazyParams over `values` that counts reads per key."""

    def __init__(self, values: dict[str, torch.Tensor]):
        self.reads: dict[str, int] = dict.fromkeys(values, 0)

        def make(k: str) -> torch.Tensor:
            self.reads[k] += 1
            return values[k].clone()

        super().__init__({k: v.shape for k, v in values.items()}, make)


def test_delta_view_equals_delta_and_refuses_now(lin64):
    view = lin64.delta_view("teacher")
    whole = lin64.delta("teacher")
    assert list(view) == list(whole) and len(view) == len(whole)
    assert all(torch.equal(view[k], whole[k]) for k in whole)
    assert all(view.shape_of(k) == whole[k].shape for k in whole)
    with pytest.raises(ConfigError, match="different initialisations"):
        lin64.delta_view("cross", "base")  # refused at creation, not at the first read


def test_random_direction_is_reproducible_per_key_and_has_the_norm(lin64):
    like = lin64.params("base")
    r = random_direction(like, seed=7, scale=2.5)
    assert isinstance(r, LazyParams)
    keys = list(like)
    first = {k: r[k] for k in reversed(keys)}  # read order does not matter: one generator per key
    assert all(torch.equal(first[k], r[k]) for k in keys)
    assert abs(norm(r) - 2.5) < 1e-12
    assert all(r[k].dtype == like[k].dtype and r[k].shape == like[k].shape for k in keys)
    other = random_direction(like, seed=8, scale=2.5)
    assert not torch.equal(r[keys[0]], other[keys[0]])
    default = random_direction(lin64.delta("teacher"), seed=7)  # default scale: the norm of `like`
    assert abs(norm(default) - norm(lin64.delta("teacher"))) < 1e-9


def test_block_draws_and_block_norms(monkeypatch):
    like = {"w": torch.zeros(37, 11, dtype=torch.float64), "b": torch.zeros(29, dtype=torch.float64)}
    whole = random_direction(like, seed=3, scale=1.0)
    monkeypatch.setattr(pd, "DRAW_CHUNK", 5)  # row blocks of one row, element blocks of 5
    blocks = random_direction(like, seed=3, scale=1.0)
    assert abs(norm(blocks) - 1.0) < 1e-12
    v = torch.randn(101, dtype=torch.float64)
    assert abs(norm({"v": v}) - float(v.norm())) < 1e-12
    assert whole["w"].shape == blocks["w"].shape  # the block size changes the stream, never the layout


def test_masks_read_only_what_they_keep():
    vals = {"unembed.W_U": torch.ones(3, 2), "blocks.0.attn.W_Q": torch.full((2, 2), 2.0)}
    src = Counting(vals)
    masked = without(src, ("unembed.",))
    assert torch.equal(masked["unembed.W_U"], torch.zeros(3, 2)) and torch.equal(masked["blocks.0.attn.W_Q"], vals[
        "blocks.0.attn.W_Q"])
    assert norm(src, ("unembed.",)) == 4.0 and src.reads["unembed.W_U"] == 1  # norm skips excluded keys unread
    kept = only(vals, ["unembed.W_U"])
    assert torch.equal(kept["blocks.0.attn.W_Q"], torch.zeros(2, 2))


def test_check_direction_is_lazy_and_copies_nothing(lin64):
    model = AlignmentModel(lin64)
    d = {k: torch.randn_like(v) for k, v in list(model.params.items())[:2]}
    checked = check_direction(model, d)
    assert set(checked) == set(model.params)
    k0 = next(iter(d))
    assert checked[k0].data_ptr() == d[k0].data_ptr()  # same device and dtype: no copy
    missing = next(k for k in model.params if k not in d)
    assert torch.equal(checked[missing], torch.zeros_like(model.params[missing]))
    src = Counting({k: v for k, v in d.items()})
    check_direction(model, src)
    assert set(src.reads.values()) == {0}  # checked by shape only
    bad = {k0: torch.zeros(3)}
    with pytest.raises(Exception, match="has shape"):
        check_direction(model, bad)


def test_read_cache_fills_then_stops_within_its_budget():
    vals = {f"k{i}": torch.zeros(4) for i in range(3)}  # 16 bytes each
    src = Counting(vals)
    cache = ReadCache(max_bytes=32)
    view = cache.view("d", src)
    for _ in range(3):
        for k in vals:
            view[k]
    assert cache.bytes == 32
    assert src.reads == {"k0": 1, "k1": 1, "k2": 3}  # the first two stay; the one past the budget is remade
    roomy = ReadCache(max_bytes=None)
    src2 = Counting(vals)
    view2 = roomy.view("d", src2)
    for _ in range(3):
        for k in vals:
            view2[k]
    assert set(src2.reads.values()) == {1}
    plain = dict(vals)
    assert roomy.view("p", plain) is plain


def test_lazy_directions_score_like_whole_dicts(lin64, distill_rows, monkeypatch):
    model = AlignmentModel(lin64)
    hard = Objective("hard")
    lazy = {"delta_T": lin64.delta_view("teacher"), "random": random_direction(model.params, seed=1, scale=1.0)}
    whole = {n: {k: d[k] for k in d} for n, d in lazy.items()}
    a = group_scores(model, distill_rows, lazy, hard, batch_size=4)
    b = group_scores(model, distill_rows, whole, hard, batch_size=4)
    for n in lazy:
        assert torch.equal(a.by_direction[n], b.by_direction[n])
    assert torch.equal(a.grad_norm, b.grad_norm)
    # column blocks of a few elements: the same values up to summation order
    monkeypatch.setattr(gs, "ROW_BLOCK_BYTES", 64)
    c = group_scores(model, distill_rows, lazy, hard, batch_size=4, memory_budget_bytes=2**16)
    for n in lazy:
        assert torch.allclose(c.by_direction[n], b.by_direction[n], rtol=1e-10, atol=1e-14)
    assert torch.allclose(c.grad_norm, b.grad_norm, rtol=1e-12)
