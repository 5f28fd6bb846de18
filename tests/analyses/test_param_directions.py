"""analyses.param_directions: point_on_line (one reused buffer, values bit-identical to at + s d) and
random_direction (bit-identical to a whole draw)."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.param_directions import point_on_line


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_point_on_line_is_bit_identical_to_the_naive_sum_and_reuses_its_buffer(dtype):
    g = torch.Generator().manual_seed(0)
    at = {"a": torch.randn(7, 5, generator=g).to(dtype), "b": torch.randn(3, generator=g).to(dtype)}
    d = {k: torch.randn(v.shape, generator=g).to(dtype) for k, v in at.items()}
    before = {k: v.clone() for k, v in at.items()}
    buf = None
    ptrs = None
    for s in (0.0, 0.2113248654051871, 0.7886751345948129, 1.0):
        buf = point_on_line(at, d, s, buf)
        ptrs = ptrs or {k: v.data_ptr() for k, v in buf.items()}
        assert {k: v.data_ptr() for k, v in buf.items()} == ptrs  # the same storage at every node
        for k in at:
            assert torch.equal(buf[k], at[k] + s * d[k])  # exactly, not approximately
    assert all(torch.equal(at[k], before[k]) for k in at)  # the base point is only read


@pytest.mark.parametrize("scale", [None, 1.0])
def test_random_direction_equals_the_one_shot_draw_exactly(scale):
    """The lazy draw (one generator per key, seeded from the seed and the key's name) is
    bit-identical to drawing every key whole, then scaling."""
    from workbench.analyses.param_directions import _key_seed, norm, random_direction

    g = torch.Generator().manual_seed(1)
    like = {"w": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g), "e": torch.randn(9, 3, generator=g)}
    raw = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(_key_seed(7, k)), dtype=torch.float32)
           for k, v in like.items()}  # a float32 model's controls are drawn in float32
    factor = (norm(like) if scale is None else scale) / norm(raw)
    ref = {k: (r.double() * factor).to(torch.float32) for k, r in raw.items()}
    got = random_direction(like, seed=7, scale=scale)
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    assert norm(got) == pytest.approx(norm(like) if scale is None else scale, rel=1e-6)
