"""Delta patching's random control without whole-key float64 copies: `norm_matched_patch` equals
the recipient plus `norm_matched_random` on the delta (the previous computation), bit for bit on
small keys and within 1e-12 (float64) on keys streamed in chunks, drawing the same numbers and
leaving the generator where one whole draw leaves it."""

import pytest
import torch

from workbench.analyses import delta_stats as stats
from workbench.analyses.patching.patched_models import _spans, norm_matched_patch, norm_matched_random


def _states(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    donor = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    recipient = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    return donor, recipient


def _reference(donor, recipient, keys, gen):
    noise = norm_matched_random({k: donor[k] - recipient[k] for k in donor}, keys, gen)
    return {k: recipient[k] + noise[k] for k in noise}


@pytest.mark.parametrize("chunk", [None, 64, 48])
def test_patch_equals_recipient_plus_norm_matched_random(monkeypatch, chunk):
    shapes = {"a": (37, 11), "b": (7,), "c": (16, 4), "d": (65, 1)}  # tails of 23, 7, 0 and 1 elements
    donor, recipient = _states(shapes)
    keys = {"a", "b", "c", "d"}
    if chunk is not None:  # every key above 7 elements streamed in chunks
        monkeypatch.setattr(stats, "CHUNK", chunk)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    want = _reference(donor, recipient, keys, g1)
    got = norm_matched_patch(donor, recipient, keys, g2)
    assert set(got) == keys
    for k in keys:
        if chunk is None or got[k].numel() <= chunk:
            assert torch.equal(got[k], want[k]), k
        else:
            torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)
            assert not torch.equal(got[k], recipient[k])
        noise = got[k] - recipient[k]
        assert float(noise.norm()) == pytest.approx(float((donor[k] - recipient[k]).norm()), rel=1e-12)
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))  # generator advanced alike


def test_spans_merge_a_short_tail():
    assert _spans(100, 32) == [(0, 32), (32, 64), (64, 100)]  # a 4-element tail joins the span before
    assert _spans(112, 32) == [(0, 32), (32, 64), (64, 96), (96, 112)]  # a 16-element tail stands alone
    assert _spans(10, 32) == [(0, 10)]


class _Backwards(set):
    """A set that iterates in reverse name order, as a set of strings may in another process."""

    def __iter__(self):
        return iter(sorted(set.__iter__(self), reverse=True))


def test_draw_order_does_not_depend_on_set_iteration_order():
    """String hashing is randomised per process, so a set of key names iterates in a different order
    in each run: the random control must draw keys in name order, or the same command gives a
    different `random Δ` each time it runs."""
    donor, recipient = _states({"a": (5, 3), "b": (4,), "c": (2, 2)})
    delta = {k: donor[k] - recipient[k] for k in donor}
    for fn, args in ((norm_matched_random, (delta,)), (norm_matched_patch, (donor, recipient))):
        ahead = fn(*args, {"a", "b", "c"}, torch.Generator().manual_seed(3))
        behind = fn(*args, _Backwards({"a", "b", "c"}), torch.Generator().manual_seed(3))
        for k in ahead:
            assert torch.equal(ahead[k], behind[k]), k
