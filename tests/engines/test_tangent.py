"""The hand-written forward mode (workbench.engines.tangent) equals torch.func.jvp in float64, for every
activation, depth, loss and ragged batch; the naive-loop exactness of the default path is in
test_gradients.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analyses.param_directions import random_direction
from workbench.analyses.path_scores import path_scores
from workbench.core.errors import ConfigError, DataError, UnknownNameError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.per_example import alignment_scores
from workbench.engines.tangent import loss_tangents
from workbench.organism.config import OrganismConfig
from workbench.organism.tokenizer import Tokenizer

TOK = Tokenizer.default()


def model_with(act: str, n_layers: int) -> AlignmentModel:
    shape = OrganismConfig().model
    config = {**shape.native_config(len(TOK), seed=n_layers), "act_fn": act, "n_layers": n_layers, "d_model": 32,
              "n_heads": 2, "d_head": 16, "d_mlp": 64}
    base = boot_native(config, dtype=torch.float64)
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so their tangents are exercised
        for name, p in base.named_parameters():
            if "ln" in name or "bias" in name or name.endswith(".b_in"):
                p.add_(0.1 * torch.randn_like(p))
    return AlignmentModel(Lineage.from_models({"base": base}, tokenizer=TOK))


def ragged_numbers(n: int, seed: int) -> Inputs:
    """Rows of different prompt and completion lengths (right-padded), number tokens only."""
    rng = np.random.default_rng(seed)
    numbers = TOK.number_channel_ids[:-2]
    prompts = [rng.choice(numbers, size=int(rng.integers(2, 7))).tolist() for _ in range(n)]
    completions = [rng.choice(numbers, size=int(rng.integers(3, 12))).tolist() for _ in range(n)]
    return Inputs.from_sequences(prompts, completions, sources="test", pad_id=TOK.pad_id)


def objectives(model: AlignmentModel) -> dict[str, Objective]:
    ids = torch.tensor(TOK.number_channel_ids)
    teacher = random_direction(model.params, seed=11)
    teacher = {k: model.params[k] + 0.5 * v for k, v in teacher.items()}
    return {"hard": Objective("hard"), "hard_renorm": Objective("hard", ids=ids),
            "soft": Objective("soft", ids=ids, teacher=teacher), "soft_full": Objective("soft", teacher=teacher)}


@pytest.mark.parametrize(("act", "n_layers"), [("gelu", 2), ("gelu_new", 1), ("relu", 3)])
def test_explicit_tangents_equal_torch_func_jvp(act, n_layers):
    model = model_with(act, n_layers)
    x = ragged_numbers(9, seed=n_layers)
    d = random_direction(model.params, seed=2)  # every key: embeddings, positions, LayerNorms, biases, unembed
    for name, objective in objectives(model).items():
        ref = alignment_scores(model, x, d, objective, batch_size=4, method="func").per_token
        got = alignment_scores(model, x, d, objective, batch_size=4, method="explicit").per_token
        assert got.shape == ref.shape, name
        err = float((got - ref).abs().max() / ref.abs().max())
        assert err <= 1e-10, (name, err)


def test_direct_call_with_partial_direction_and_weighted_mask():
    """`loss_tangents` on its own: keys absent from the direction have zero tangent (embeddings,
    a LayerNorm, a weight without its bias), and a weighted mask scales each position's tangent."""
    from torch.func import jvp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from workbench.engines.functional import FunctionalModel

    model = model_with("gelu", 2)
    x = ragged_numbers(5, seed=9)
    full = random_direction(model.params, seed=8)
    keep = ["blocks.0.attn.q.weight", "blocks.1.ln2.weight", "blocks.1.mlp.out.bias", "unembed.weight"]
    partial = {k: full[k] for k in keep}
    w = {**model._buffers, **model.params}
    n_layers, n_heads, eps, act = model._shape
    mask = x.next_token_mask().double() * torch.rand(len(x), x.tokens.shape[1] - 1, dtype=torch.float64)
    got = loss_tangents(w, partial, x.tokens, mask, None, None, n_layers=n_layers, n_heads=n_heads, eps=eps, act=act)

    def losses(p):
        logits = FunctionalModel({**w, **p}, n_layers, n_heads, eps, act)(x.tokens)[:, :-1]
        return -torch.log_softmax(logits, -1).gather(-1, x.tokens[:, 1:, None]).squeeze(-1) * mask

    tangent_in = {k: partial.get(k, torch.zeros_like(v)) for k, v in model.params.items()}
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernel has no forward-mode rule
        _, ref = jvp(losses, (dict(model.params),), (tangent_in,))
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-10
    ids = torch.tensor(TOK.number_channel_ids[:10])  # most written numbers fall outside: a clear error
    with pytest.raises(DataError, match="outside the renormalisation ids"):
        loss_tangents(w, partial, x.tokens, mask, None, ids, n_layers=n_layers, n_heads=n_heads, eps=eps, act=act)


def test_explicit_path_scores_and_an_empty_mask():
    model = model_with("gelu", 2)
    x = ragged_numbers(5, seed=7)
    d = random_direction(model.params, seed=4, scale=0.3)
    hard = Objective("hard")
    ref = path_scores(model, x, d, hard, points=3, method="func").total
    got = path_scores(model, x, d, hard, points=3, method="explicit").total
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-10
    # a batch whose mask counts nothing has zero tangents (no position is computed)
    w = {**model._buffers, **model.params}
    n_layers, n_heads, eps, act = model._shape
    zeros = loss_tangents(w, d, x.tokens, torch.zeros(len(x), x.tokens.shape[1] - 1, dtype=torch.float64), None, None,
                          n_layers=n_layers, n_heads=n_heads, eps=eps, act=act)
    assert zeros.shape == (len(x), x.tokens.shape[1] - 1) and not zeros.any()


def test_explicit_method_errors():
    model = model_with("gelu", 1)
    bridge = AlignmentModel(model.lineage, backend="bridge")
    x = ragged_numbers(2, seed=0)
    d = random_direction(model.params, seed=0)
    with pytest.raises(ConfigError, match="backend='functional'"):
        alignment_scores(bridge, x, d, Objective(), method="explicit")
    with pytest.raises(UnknownNameError, match="jvp method"):
        alignment_scores(model, x, d, Objective(), method="forward")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explicit_tangents_on_cuda_match_cpu():
    cpu = model_with("gelu", 2)
    gpu = AlignmentModel(Lineage.from_models({"base": cpu.lineage["base"].to("cuda")}, tokenizer=TOK))
    x = ragged_numbers(6, seed=3)
    d = random_direction(cpu.params, seed=5)
    for objective in (Objective("hard"), Objective("hard", ids=torch.tensor(TOK.number_channel_ids))):
        ref = alignment_scores(cpu, x, d, objective, method="func").total
        got = alignment_scores(gpu, x, d, objective, method="explicit").total
        assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-9
