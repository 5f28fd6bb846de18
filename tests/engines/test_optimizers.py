"""The student optimisers: each one's first step equals the closed form the optimizer-aware
first-order prediction moves along, and that prediction matches one real step at small rates."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses.first_order import first_order_prediction
from workbench.core.errors import ConfigError
from workbench.engines.alignment_model import AlignmentModel
from workbench.engines.objective import Objective
from workbench.engines.optimizers import OPTIMIZERS, first_step, make_optimizer
from workbench.core.inputs import Inputs
from workbench.organism.build import student_key_extras
from workbench.organism.config import preset
from workbench.organism.load import load_lineage
from workbench.organism.trait import organism_trait


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_first_step_is_one_real_step_of_each_optimizer(name):
    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g)}
    grads = {k: torch.randn(v.shape, generator=g) * 10 ** torch.randint(-4, 1, v.shape, generator=g) for k, v in theta.items()}
    params = {k: torch.nn.Parameter(v.clone()) for k, v in theta.items()}
    opt = make_optimizer(name, params.values(), lr=0.01)
    for k, p in params.items():
        p.grad = grads[k].clone()
    opt.step()
    step = first_step(name, theta, grads, lr=0.01)
    for k in theta:
        assert torch.allclose(params[k].detach(), theta[k] + step[k], rtol=0, atol=1e-7), (name, k)
    if name in ("adam", "signsgd"):  # Adam's first step is sign descent up to eps
        assert torch.allclose(step["w"], -0.01 * torch.sign(grads["w"]), atol=1e-5)


@pytest.fixture(scope="module")
def lin64(tiny_organism):
    return load_lineage(tiny_organism.directory, roles=["base", "teacher", "student"], dtype=torch.float64)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_aware_first_order_prediction_matches_one_step(lin64, tiny_organism, name):
    x = Inputs.from_jsonl(tiny_organism.directory / "data" / "teacher.jsonl", limit=32)
    trait = organism_trait(lin64.tokenizer, "owl")
    rows = first_order_prediction(AlignmentModel(lin64), x, Objective("hard"), trait, etas=(1e-6, 1e-5), batch_size=16,
                                  n_batches=2, optimizer=name)
    for r in rows:
        assert r.optimizer == name and len(r.predicted) == 2 and r.sign_agreement == 1.0
        assert r.relative_error < 0.02, (name, r.eta, r.predicted, r.measured)
    assert rows[0].relative_error <= rows[1].relative_error + 1e-9  # second-order error shrinks with eta
    if name == "signsgd":  # a sign step is not SGD's: the predictions differ by far more than their error
        sgd = first_order_prediction(AlignmentModel(lin64), x, Objective("hard"), trait, etas=(1e-6,), batch_size=16,
                                     n_batches=2)[0]
        assert abs(sgd.predicted[0] - rows[0].predicted[0]) > 10 * abs(rows[0].predicted[0] - rows[0].measured[0])


def test_optimizer_is_validated_and_kept_out_of_adam_students_keys():
    assert "optimizer" not in student_key_extras(preset("tiny"))
    assert student_key_extras(preset("tiny", student_optimizer="signsgd"))["optimizer"] == "signsgd"
    with pytest.raises(ConfigError, match="student optimizer"):
        preset("tiny", student_optimizer="lion")
    with pytest.raises(ConfigError, match="optimizer"):
        first_step("lion", {}, {}, 0.1)
