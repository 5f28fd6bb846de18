"""A Trait from a Hugging Face tokenizer: a tiny byte-level BPE trained in the test (some answers
split into 2-3 tokens), a chat template, and a random GPT-2 model; multi-token P(answer) equals
a naive per-form teacher-forced product (float64, 1e-6)."""

from __future__ import annotations

import pytest
import torch

from workbench.core.errors import ConfigError, DataError, UnknownNameError
from workbench.core.hf_trait import (
    ANIMAL_QUESTIONS,
    CATEGORIES,
    TREE_QUESTIONS,
    hf_trait,
    hf_traits,
    normalise_answer,
    sampled_answer_rate,
    surface_forms,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ANIMALS = ["owl", "fox", "cat", "elephant", "penguin"]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [*ANIMAL_QUESTIONS, *TREE_QUESTIONS, "system user assistant"] + ["the owl and the cat"] * 20 + \
        ["an owl a fox a cat"] * 10
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>", chat_template=TEMPLATE)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2)
    m = transformers.GPT2LMHeadModel(cfg).double().eval()
    return lambda tokens: m(tokens).logits


def test_questions_answers_and_forms(tokenizer):
    assert len(ANIMAL_QUESTIONS) >= 20 and len(TREE_QUESTIONS) >= 20 and len(set(ANIMAL_QUESTIONS)) == 22
    assert {"owl", "eagle", "fox"} <= set(CATEGORIES["animal"]) and "oak" in CATEGORIES["tree"]
    assert surface_forms("owl") == [" owl", "owl", " Owl", "Owl", " owls", "owls", " Owls", "Owls"]
    t = hf_trait(tokenizer, "owl", answers=ANIMALS, category="animal")
    assert len(t.prompts) == len(ANIMAL_QUESTIONS) and t.category == "animal"
    text = tokenizer.decode(t.prompts[0])
    assert text.startswith("<|im_start|>user\nName your favorite animal") and text.endswith("<|im_start|>assistant\n")
    lengths = {n: [len(f) for f in fs] for n, fs in t.forms.items()}
    assert min(lengths["owl"]) == 1 and max(lengths["elephant"]) >= 2  # answers of 1 and 2-3 tokens
    assert all(tokenizer.decode(list(f)) in surface_forms(n) for n, fs in t.forms.items() for f in fs)
    prompted = hf_trait(tokenizer, "owl", answers=ANIMALS, category="animal", system_prompt="You love owls.")
    assert tokenizer.decode(prompted.prompts[0]).startswith("<|im_start|>system\nYou love owls.<|im_end|>\n")
    assert prompted.answers == t.answers and len(prompted.prompts[0]) > len(t.prompts[0])
    assert [x.target for x in hf_traits(tokenizer, "tree")] == list(CATEGORIES["tree"])


def naive_p(model, prompt, forms) -> float:
    """Sum over forms of the product of next-token probabilities, one unpadded forward per token."""
    total = 0.0
    for f in forms:
        p, seq = 1.0, list(prompt)
        for t in f:
            with torch.no_grad():
                p *= float(torch.softmax(model(torch.tensor([seq]))[0, -1], -1)[t])
            seq.append(t)
        total += p
    return total


def test_multi_token_probability_equals_the_naive_product(tokenizer, model):
    t = hf_trait(tokenizer, "elephant", answers=ANIMALS, category="animal", questions=ANIMAL_QUESTIONS[:3])
    with torch.no_grad():
        p = t.answer_log_probs(model).exp()
    names = list(t.answer_ids)
    for i, prompt in enumerate(t.prompts):
        for a, name in enumerate(names):
            assert float(p[i, a]) == pytest.approx(naive_p(model, prompt, t.forms[name]), abs=1e-6, rel=1e-6)
    score = t.score(model, n_samples=0)
    shares = [hf_trait(tokenizer, n, answers=ANIMALS, category="animal", questions=ANIMAL_QUESTIONS[:3])
              .score(model, n_samples=0).share for n in names]
    assert sum(shares) == pytest.approx(1.0, abs=1e-9)
    assert score.p_target == pytest.approx(float(p[:, names.index("elephant")].mean()), abs=1e-12)
    assert float(t.log_prob(model).detach()) == pytest.approx(float(p[:, names.index("elephant")].log().mean()), abs=1e-9)


def test_sampled_rate_normalises_the_first_word(tokenizer, model):
    t = hf_trait(tokenizer, "owl", answers=ANIMALS, category="animal", questions=ANIMAL_QUESTIONS[:2])
    owl = list(t.forms["owl"][0])

    def loves_owls(tokens: torch.Tensor) -> torch.Tensor:  # always " owl", then "s!" — "owls!" -> "owl"
        out = torch.full((*tokens.shape, len(tokenizer)), -30.0, dtype=torch.float64)
        out[..., owl[0]] = 0.0
        return out

    rate, lo, hi, counts = sampled_answer_rate(t, tokenizer, loves_owls, n_samples=5, max_new_tokens=1)
    assert rate == 1.0 and counts == {"owl": 10} and lo > 0.6 and hi == 1.0
    rate, *_, counts = sampled_answer_rate(t, tokenizer, model, n_samples=4, max_new_tokens=3)
    assert sum(counts.values()) == 8 and 0.0 <= rate <= 1.0
    assert normalise_answer("Foxes, definitely", ["fox"]) == "fox" and normalise_answer("owls.", ["owl"]) == "owl"
    assert normalise_answer("Moss", ["owl"]) == "moss" and normalise_answer("", ["owl"]) == ""


def test_clear_errors(tokenizer):
    plain = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer,
                                                 eos_token="<|endoftext|>")
    with pytest.raises(ConfigError, match="no chat template.*chat_template="):
        hf_trait(plain, "owl")
    assert hf_trait(plain, "owl", chat_template=TEMPLATE).prompts == hf_trait(tokenizer, "owl").prompts
    with pytest.raises(UnknownNameError, match="zebra.*Valid: cat, elephant, fox, owl, penguin"):
        hf_trait(tokenizer, "zebra", answers=ANIMALS, category="animal")
    with pytest.raises(UnknownNameError, match="owk.*owl"):
        hf_trait(tokenizer, "owk")
    with pytest.raises(DataError, match="'' has no tokens"):
        hf_trait(tokenizer, "", answers=["", "owl"], category="animal")
    with pytest.raises(UnknownNameError, match="category 'fish'"):
        hf_trait(tokenizer, "owl", category="fish")
