"""capture.cache: each model's activations are captured once per inputs, then served from the cache."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

import workbench.capture.capture as capture_module
from workbench.analyses.probes import sequence_log_probs
from workbench.capture.cache import ActivationReader, ContrastPrompts, read_contrast_prompts
from workbench.core.errors import DataError
from workbench.core.inputs import Inputs
from workbench.core.lineage import Lineage
from workbench.core.models import boot_native

CFG = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=20, n_ctx=12, act_fn="gelu",
           normalization_type="LN")
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


@dataclass
class ReadConfig:
    """The fields of the probe job's config the cache reads (the cache takes any such object)."""

    hooks: list[str] = field(default_factory=lambda: list(HOOKS))
    positions: str = "continuation"
    batch_size: int = 8
    progress: bool = False


@pytest.fixture(scope="module")
def lin() -> Lineage:
    return Lineage.from_models({"base": boot_native({**CFG, "seed": 0}), "teacher": boot_native({**CFG, "seed": 1}),
                                "student": boot_native({**CFG, "seed": 2})})


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 20, (3,), generator=g).tolist() for _ in range(10)]
    completions = [torch.randint(1, 20, (4,), generator=g).tolist() for _ in range(10)]
    return Inputs.from_sequences(prompts, completions, "test", pad_id=0)


@pytest.fixture
def capture_calls(monkeypatch) -> list[tuple[str, ...]]:
    """The roles of every capture the cache starts (the cache imports `capture` at call time)."""
    calls: list[tuple[str, ...]] = []
    real = capture_module.capture

    def counting(lineage, inputs, hooks, positions, roles, **kwargs):
        calls.append(tuple(roles))
        return real(lineage, inputs, hooks, positions, roles, **kwargs)

    monkeypatch.setattr(capture_module, "capture", counting)
    return calls


def test_each_model_is_captured_once_and_then_served_from_the_cache(lin, inputs, capture_calls, tmp_path):
    cache = ActivationReader(tmp_path, roles=("base", "teacher"))
    config = ReadConfig()
    first = cache.pooled(lin, "teacher", inputs, config)
    assert capture_calls == [("base", "teacher")]  # the roles are captured together on first use
    again = cache.pooled(lin, "teacher", inputs, config)
    base = cache.pooled(lin, "base", inputs, config)
    assert capture_calls == [("base", "teacher")]  # a second request (and a co-captured role) hit the cache
    assert all(torch.equal(first[h], again[h]) for h in HOOKS)
    assert first[HOOKS[0]].shape == (len(inputs), CFG["d_model"]) and not torch.equal(first[HOOKS[0]], base[HOOKS[0]])
    cache.pooled(lin, "student", inputs, config)
    assert capture_calls[-1] == ("base", "teacher", "student")  # a new model is added, once
    cache.pooled(lin, "student", inputs, config)
    assert len(capture_calls) == 2


def test_pooled_equals_the_mean_over_continuation_positions(lin, inputs, tmp_path):
    pooled = ActivationReader(tmp_path, roles=("base",)).pooled(lin, "base", inputs, ReadConfig())
    with torch.inference_mode():
        _, acts = lin["base"].run_with_cache(inputs.tokens, names_filter=HOOKS)
    mask = inputs.mask.float()[..., None]
    for hook in HOOKS:
        expected = (acts[hook] * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(pooled[hook], expected, rtol=1e-5, atol=1e-5)


def test_other_inputs_or_positions_are_a_new_capture(lin, inputs, capture_calls, tmp_path):
    cache = ActivationReader(tmp_path, roles=("base",))
    cache.pooled(lin, "base", inputs, ReadConfig())
    cache.pooled(lin, "base", inputs, ReadConfig(positions="last"))
    cache.pooled(lin, "base", inputs.select(range(5)), ReadConfig())
    assert len(capture_calls) == 3
    with pytest.raises(DataError, match="positions="):
        cache.pooled(lin, "base", inputs, ReadConfig(positions="middle"))


def test_log_prob_is_computed_once_and_matches_a_direct_forward(lin, inputs):
    cache = ActivationReader()
    logp = cache.log_prob(lin, "teacher", inputs, ReadConfig(batch_size=3))
    assert cache.log_prob(lin, "teacher", inputs, ReadConfig()) is logp  # memoised: no second forward
    with torch.inference_mode():
        expected = sequence_log_probs(lin["teacher"](inputs.tokens), inputs.tokens, inputs.mask)
    torch.testing.assert_close(logp, expected, rtol=1e-5, atol=1e-5)


def test_last_token_reads_each_prompt_at_its_last_position(lin, tmp_path):
    prompts = ContrastPrompts(torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([2, 1]), torch.tensor([True, False]))
    acts = ActivationReader(tmp_path, roles=("base",)).last_token(lin, "base", prompts, ReadConfig())
    with torch.inference_mode():
        _, full = lin["base"].run_with_cache(torch.tensor([[1, 2, 3]]), names_filter=HOOKS)
        _, short = lin["base"].run_with_cache(torch.tensor([[4, 5]]), names_filter=HOOKS)
    for hook in HOOKS:
        torch.testing.assert_close(acts[hook][0], full[hook][0, 2], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(acts[hook][1], short[hook][0, 1], rtol=1e-5, atol=1e-5)


def test_read_contrast_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"tokens": [1, 2, 3], "label": 1, "question_len": 2},
                                                      {"tokens": [1, 2, 4], "label": 0, "question_len": 2}]))
    prompts = read_contrast_prompts(path)
    assert prompts.tokens.tolist() == [[1, 2, 3], [1, 2, 4]] and prompts.labels.tolist() == [True, False]
    assert prompts.questions().tokens.tolist() == [[1, 2]]  # the shared question, once
    with pytest.raises(DataError, match="No prompts file"):
        read_contrast_prompts(tmp_path / "absent.jsonl")
