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


@pytest.mark.parametrize("train", ["base", "teacher"])
def test_foreach_adam_trains_the_bytes_of_the_per_parameter_loop(monkeypatch, train):
    """FOREACH (the multi-tensor Adam(W) update) is the loop's arithmetic: same weights to the bit."""
    import workbench.organism.training as training
    from workbench.core.models import boot_native
    from workbench.organism.config import ModelShape, preset
    from workbench.organism.tokenizer import Tokenizer

    tok = Tokenizer.default()
    cfg = preset("tiny", model=ModelShape(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32), base_steps=20,
                 base_warmup=5, teacher_steps=20)
    weights = []
    for foreach in (False, True):
        monkeypatch.setattr(training, "FOREACH", foreach)
        model = boot_native(cfg.model.native_config(len(tok), 0), device="cpu")
        if train == "base":
            training.pretrain_base(model, tok, cfg, 0, progress=False)
        else:
            training.finetune_teacher(model, tok, cfg, tok.category_of("owl"), [tok.token_id("owl")], 1, progress=False)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
