"""engines.functional: the fused FunctionalModel computes what the TransformerBridge computes."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ConfigError
from workbench.core.models import boot_native, clean_state_dict
from workbench.engines.functional import FunctionalModel

CFG = dict(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_vocab=23, n_ctx=16, act_fn="gelu",
           normalization_type="LN", seed=5)


def tokens(batch: int = 3, seq: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CFG["d_vocab"], (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("act_fn", ["gelu", "gelu_new", "relu"])
def test_logits_equal_the_bridges_in_float64(act_fn):
    bridge = boot_native({**CFG, "act_fn": act_fn}, dtype=torch.float64)
    x = tokens()
    with torch.no_grad():
        expected = bridge(x)
        got = FunctionalModel.from_bridge(bridge)(x)
    assert got.dtype == torch.float64 and got.shape == (3, 12, CFG["d_vocab"])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_logits_equal_the_bridges_in_float32():
    bridge = boot_native(CFG)
    x = tokens(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(FunctionalModel.from_bridge(bridge)(x), bridge(x), rtol=1e-5, atol=1e-5)


def test_decoding_with_the_kv_cache_equals_one_full_forward():
    bridge = boot_native(CFG, dtype=torch.float64)
    model, x = FunctionalModel.from_bridge(bridge), tokens(seq=14, seed=2)
    with torch.no_grad():
        full = model(x)
        logits, cache = model.forward(x[:, :5])
        parts = [logits]
        for start, stop in ((5, 6), (6, 9), (9, 14)):  # one token, then chunks of new positions
            logits, cache = model.forward(x[:, start:stop], start, cache)
            parts.append(logits)
    assert [k.shape[2] for k, _ in cache] == [14, 14]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)


def test_gradients_equal_the_bridges():
    bridge = boot_native(CFG, dtype=torch.float64)
    x = tokens(seed=3)
    model = FunctionalModel.from_bridge(bridge, trainable=True)
    model(x).logsumexp(-1).mean().backward()
    bridge(x).logsumexp(-1).mean().backward()
    live = bridge.state_dict(keep_vars=True)  # clean keys -> the live parameters
    checked = 0
    for key, w in model.w.items():
        if w.requires_grad:
            torch.testing.assert_close(w.grad, live[key].grad, rtol=1e-8, atol=1e-10)
            checked += 1
    assert checked == len(model.parameters()) > 0


def test_trainable_frozen_and_load_into():
    bridge = boot_native(CFG)
    before = clean_state_dict(bridge)
    model = FunctionalModel.from_bridge(bridge, trainable=True, frozen=("embed.", "unembed."))
    trainable = {k for k, w in model.w.items() if w.requires_grad}
    assert trainable and not any(k.startswith(("embed.", "unembed.")) for k in trainable)
    assert not any(w.requires_grad for w in FunctionalModel.from_bridge(bridge).w.values())
    with torch.no_grad():
        model.w["blocks.1.mlp.out.weight"].add_(0.25)
    assert torch.equal(clean_state_dict(bridge)["blocks.1.mlp.out.weight"], before["blocks.1.mlp.out.weight"])  # a copy
    model.load_into(bridge)
    after = clean_state_dict(bridge)
    torch.testing.assert_close(after["blocks.1.mlp.out.weight"], before["blocks.1.mlp.out.weight"] + 0.25)
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens()), model(tokens()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, message", [({"normalization_type": "RMS"}, "LayerNorm models"),
                                             ({"act_fn": "silu"}, "does not know act_fn")])
def test_unsupported_models_raise_config_error(change, message):
    with pytest.raises(ConfigError, match=message):
        FunctionalModel.from_bridge(boot_native({**CFG, **change}))
