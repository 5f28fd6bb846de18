import torch

from workbench.core.models import boot_native
from workbench.engines.functional import FunctionalModel
from workbench.organism.sampling import gumbel_sample, sample_continuations

CFG = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=40, n_ctx=24,
           act_fn="gelu", normalization_type="LN", seed=3)


def test_functional_model_matches_bridge_logits_whole_and_incrementally():
    bridge = boot_native(CFG)
    x = torch.randint(0, 40, (4, 20))
    with torch.no_grad():
        ref = bridge(x)
    dec = FunctionalModel.from_bridge(bridge)
    assert torch.allclose(dec(x), ref, atol=1e-5)
    logits, cache = dec.forward(x[:, :7], 0, None)
    parts = [logits]
    for t in range(7, 20):
        logits, cache = dec.forward(x[:, t : t + 1], t, cache)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, 1), ref, atol=1e-5)


def test_gumbel_sampling_matches_probabilities():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(40000, 4)
    draws = gumbel_sample(logits, 1.0, torch.Generator().manual_seed(0)).flatten()
    freq = torch.bincount(draws, minlength=4) / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.01)


def test_sampling_is_seeded_and_low_temperature_is_greedy():
    bridge = boot_native(CFG)
    prompts = torch.randint(0, 40, (6, 5))
    a = sample_continuations(bridge, prompts, 4, seed=1)
    assert torch.equal(a, sample_continuations(bridge, prompts, 4, seed=1))
    greedy = sample_continuations(bridge, prompts, 1, temperature=1e-4, seed=2)
    with torch.no_grad():
        assert torch.equal(greedy[:, 0], bridge(prompts)[:, -1].argmax(-1))


def test_training_writes_back_and_respects_frozen_keys():
    bridge = boot_native(CFG)
    before = {k: v.clone() for k, v in bridge.state_dict().items()}
    fm = FunctionalModel.from_bridge(bridge, trainable=True, frozen=("unembed.", "ln_final."))
    assert all(not k.startswith(("unembed.", "ln_final.")) for k, v in fm.w.items() if v.requires_grad)
    opt = torch.optim.SGD(fm.parameters(), lr=0.1)
    fm(torch.randint(0, 40, (2, 6))).logsumexp(-1).mean().backward()
    opt.step()
    fm.load_into(bridge)
    after = bridge.state_dict()
    assert torch.equal(after["unembed.weight"], before["unembed.weight"])
    assert not torch.equal(after["blocks.0.attn.q.weight"], before["blocks.0.attn.q.weight"])
    with torch.no_grad():
        assert torch.allclose(bridge(torch.arange(6)[None]), fm(torch.arange(6)[None]), atol=1e-5)
