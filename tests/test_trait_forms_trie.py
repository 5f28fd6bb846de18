"""Multi-token trait scoring shares rows along each prompt's trie of surface forms: the trie scorer
equals a naive one-forward-per-token reference (float64 1e-12, float32 1e-6) on random tiny
causal models, gradients included; it runs exactly one row per leaf of the trie, far fewer than
one per prompt x form on the built-in trait."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.core.errors import DataError
from workbench.trait_forms import answer_log_probs, form_rows, sample_continuations

VOCAB = 41
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11, 12], [13]]  # four lengths
CASES = {
    "shared_prefixes": [[[20, 21, 22], [20, 21, 23]], [[20, 24]], [[25, 26, 27], [25, 26]]],
    "prefix_forms": [[[30], [30, 31]], [[30, 31, 32]], [[30, 31, 32, 33], [31]]],
    "single_token": [[[20], [21], [22]], [[23]], [[24], [25]]],
    "long_forms": [[list(range(14, 26)), list(range(14, 22)) + [40, 39]], [[26] + list(range(27, 39))], [[5]]],
    "same_form_twice": [[[20, 21], [22]], [[20, 21]], [[22, 23]]],
}


def params(dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"emb": torch.randn(VOCAB, 8, generator=g, dtype=dtype), "pos": torch.randn(32, 8, generator=g, dtype=dtype),
            "mix": torch.randn(8, 8, generator=g, dtype=dtype) / 3, "out": torch.randn(8, VOCAB, generator=g, dtype=dtype)}


def logits_of(p: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """A random causal model: a running mean of token + position embeddings, a tanh layer, an unembedding."""
    x = p["emb"][tokens] + p["pos"][: tokens.shape[1]]
    n = torch.arange(1, tokens.shape[1] + 1, dtype=x.dtype)[:, None]
    h = x + torch.tanh((x.cumsum(1) / n) @ p["mix"])
    return h @ p["out"]


def naive(model, prompts, forms) -> torch.Tensor:
    """log P(answer | prompt): one unpadded single-row forward per form token."""
    out = torch.empty(len(prompts), len(forms), dtype=torch.float64)
    for i, prompt in enumerate(prompts):
        for a, answer_forms in enumerate(forms):
            per_form = []
            for f in answer_forms:
                lp = 0.0
                for j, t in enumerate(f):
                    logits = model(torch.tensor([[*prompt, *f[:j]]]))[0, -1]
                    lp = lp + F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)[t]
                per_form.append(lp)
            out[i, a] = torch.stack(per_form).double().logsumexp(0)
    return out


def leaves(forms) -> int:
    """Rows one prompt needs: distinct contexts f[:-1] that are no other context's proper prefix."""
    ctx = {tuple(f[:-1]) for fs in forms for f in fs}
    return sum(not any(len(d) > len(c) and d[: len(c)] == c for d in ctx) for c in ctx)


class Counting:
    """Wraps a logits callable, recording each call's row count."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.shape[0])
        return self.fn(tokens)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)], ids=["f64", "f32"])
def test_trie_scores_equal_the_naive_reference_and_run_one_row_per_leaf(case, dtype, tol):
    forms, p = CASES[case], params(dtype)
    with torch.no_grad():
        ref = naive(lambda t: logits_of(p, t), PROMPTS, forms)
        for batch_size in (1, 3, 256):
            model = Counting(lambda t: logits_of(p, t))
            got = answer_log_probs(model, PROMPTS, forms, pad_id=0, batch_size=batch_size)
            assert got.shape == (len(PROMPTS), len(forms))
            torch.testing.assert_close(got.double(), ref, atol=tol, rtol=tol)
            rows = len(PROMPTS) * leaves(forms)
            assert sum(model.calls) == rows and max(model.calls) <= batch_size
            assert len(model.calls) == math.ceil(rows / batch_size)
        plain = answer_log_probs(lambda t: logits_of(p, t), PROMPTS, forms, pad_id=0, share=False)
        torch.testing.assert_close(plain.double(), ref, atol=tol, rtol=tol)
    if case == "single_token":
        assert leaves(forms) == 1  # every form read at the prompt's last position of one row


@pytest.mark.parametrize("case", ["shared_prefixes", "prefix_forms", "long_forms"])
def test_gradients_equal_the_naive_reference(case):
    forms, p = CASES[case], params(torch.float64, seed=1)

    def trie(q):
        return answer_log_probs(lambda t: logits_of(q, t), PROMPTS, forms, pad_id=0, batch_size=2).sum()

    def reference(q):
        return naive(lambda t: logits_of(q, t), PROMPTS, forms).sum()

    got, want = torch.func.grad(trie)(p), torch.func.grad(reference)(p)
    for k in p:
        assert got[k].abs().max() > 0
        torch.testing.assert_close(got[k], want[k], atol=1e-12, rtol=1e-10)


def test_plan_reads_each_context_once():
    plan = form_rows([[1, 2]], [[[5, 6, 7], [5, 6]], [[5]], [[8]]])
    assert plan.rows == ((0, (5, 6)),)  # [5, 6] and [5] and [8] lie along [5, 6, 7]'s row
    assert plan.reads == ((0, 1), (0, 2), (0, 3))  # after the prompt, after 5, after 5 6
    naive_plan = form_rows([[1, 2]], [[[5, 6, 7], [5, 6]], [[5]], [[8]]], share=False)
    assert len(naive_plan.rows) == 4 and len(naive_plan.reads) == 7


def test_out_of_vocabulary_answer_is_a_clear_error():
    p = params(torch.float64)
    for bad in (VOCAB, VOCAB + 7):
        with pytest.raises(DataError, match=f"token id {bad} is outside the model's vocabulary"):
            answer_log_probs(lambda t: logits_of(p, t), PROMPTS, [[[20, bad]], [[21]]], pad_id=0)


def test_sampling_forwards_each_distinct_prefix_once():
    p = params(torch.float64)
    model = Counting(lambda t: logits_of(p, t))
    draws = sample_continuations(model, [1, 2, 3], n=64, steps=3, pad_id=0, gen=torch.Generator().manual_seed(0))
    assert draws.shape == (64, 3)
    assert model.calls[0] == 1  # all 64 rows are the prompt at the first step
    assert model.calls[1] == len(set(draws[:, 0].tolist())) and model.calls[2] == len(set(map(tuple, draws[:, :2].tolist())))
    # the same draws as re-forwarding every row (float64: the probabilities agree to rounding)
    gen, tokens = torch.Generator().manual_seed(0), torch.tensor([[1, 2, 3]] * 64)
    for s in range(3):
        probs = torch.softmax(logits_of(p, tokens)[:, -1].double(), -1)
        tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=gen)], 1)
    assert torch.equal(draws, tokens[:, 3:])


def test_builtin_hf_trait_needs_far_fewer_rows():
    pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    from workbench.core.hf_trait import hf_trait
    from workbench.core.toy_hf import toy_tokenizer

    tok = toy_tokenizer()
    trait = hf_trait(tok, "owl")  # the full built-in trait: 22 questions x 20 answers x 8 forms
    forms = [trait.forms[n] for n, _ in trait.answers]
    n_forms = sum(map(len, forms))
    model = Counting(lambda t: torch.zeros(*t.shape, len(tok)))
    with torch.no_grad():
        answer_log_probs(model, trait.prompts, forms, trait.pad_id, batch_size=256)
    assert sum(model.calls) == len(trait.prompts) * leaves(forms)
    assert n_forms >= 150 and sum(model.calls) < 0.5 * len(trait.prompts) * n_forms


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)], ids=["f64", "f32"])
def test_trie_equals_naive_on_a_random_qwen2(dtype, tol):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from workbench.core.hf_trait import ANIMAL_QUESTIONS, hf_trait
    from workbench.core.toy_hf import toy_tokenizer

    tok = toy_tokenizer()
    trait = hf_trait(tok, "owl", questions=ANIMAL_QUESTIONS[:3], answers=["owl", "fox", "elephant", "penguin"],
                     system_prompt="You love owls.")
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=len(tok), max_position_embeddings=128)
    m = transformers.Qwen2ForCausalLM(cfg).to(dtype).eval()
    forms = [trait.forms[n] for n, _ in trait.answers]
    with torch.no_grad():
        got = answer_log_probs(lambda t: m(t).logits, trait.prompts, forms, trait.pad_id, batch_size=7)
        torch.testing.assert_close(got.double(), naive(lambda t: m(t).logits, trait.prompts, forms), atol=tol, rtol=tol)


def test_p_target_and_log_odds_score_only_the_targets_forms():
    from workbench.trait import Trait

    p = params(torch.float64)
    forms = CASES["shared_prefixes"]
    trait = Trait.from_prompts(PROMPTS, target="a", category="c", answers=dict(zip("abc", forms)))
    model = Counting(lambda t: logits_of(p, t))
    score = trait.score(model, n_samples=0)
    full_rows = sum(model.calls)
    model.calls.clear()
    assert trait.p_target(model) == pytest.approx(score.p_target, rel=1e-12)
    assert trait.log_odds(model) == pytest.approx(score.log_odds, rel=1e-12)
    assert sum(model.calls) == 2 * len(PROMPTS) * leaves(forms[:1]) < 2 * full_rows
