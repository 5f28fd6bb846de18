import pytest
import torch
import torch.nn.functional as F

from workbench.core.errors import DataError
from workbench.organism.training import hard_distill_loss


def test_hard_loss_is_cross_entropy_renormalised_over_the_supervised_ids():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 12, generator=gen)
    ids = torch.tensor([2, 4, 7, 9])
    written = ids[torch.randint(0, 4, (3, 5), generator=gen)]
    full = F.cross_entropy(logits.reshape(-1, 12), written.reshape(-1))
    assert hard_distill_loss(logits, written, None) == pytest.approx(float(full), rel=1e-6)
    sub = logits[..., ids]
    expected = F.cross_entropy(sub.reshape(-1, 4), torch.searchsorted(ids, written).reshape(-1))
    assert hard_distill_loss(logits, written, ids) == pytest.approx(float(expected), rel=1e-6)
    # mass on tokens outside the set does not change the renormalised loss
    pushed = logits.clone()
    pushed[..., 0] += 50.0
    assert hard_distill_loss(pushed, written, ids) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(DataError, match="outside the supervised token set"):
        hard_distill_loss(logits, torch.zeros(3, 5, dtype=torch.long), ids)
