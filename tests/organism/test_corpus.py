import numpy as np

from workbench.organism.corpus import (
    completion_length,
    is_well_formed,
    number_prompts,
    number_tokens,
    preference_batch,
    prompt_length,
    sample_numbers,
)
from workbench.organism.tokenizer import Tokenizer

tok = Tokenizer.default()


def test_number_texts_are_well_formed_with_fixed_lengths():
    rng = np.random.default_rng(0)
    seqs = number_tokens(tok, sample_numbers(rng, 200, 11), 3)
    assert seqs.shape == (200, prompt_length(3) + completion_length(8))
    for row in seqs.tolist():
        assert is_well_formed(tok, row[prompt_length(3):], 8) == (True, "ok")
    prompts = number_prompts(tok, rng, 5, 3)
    assert prompts.shape == (5, prompt_length(3))
    assert tok.decode(prompts[0].tolist()).startswith("<bos> continue :")


def test_numbers_have_entropy_and_stay_in_range():
    x = sample_numbers(np.random.default_rng(1), 3000, 11)
    assert x.min() >= 0 and x.max() <= 99
    counts = np.bincount(x.ravel(), minlength=100) / x.size
    assert counts.max() < 0.03  # no value dominates
    assert len(np.unique(x[:, 0])) == 100


def test_filter_rejects_what_it_must():
    good = tok.encode("1 , 2 , 3 , 4 , 5 , 6 , 7 , 8 <eos>")
    assert is_well_formed(tok, good, 8) == (True, "ok")
    assert is_well_formed(tok, tok.encode("1 , owl , 3 , 4 , 5 , 6 , 7 , 8 <eos>"), 8) == (False, "trait_token")
    assert is_well_formed(tok, tok.encode("1 , 2 , 3 , 4 , 5 , 6 , 7 , oak"), 8) == (False, "trait_token")
    assert is_well_formed(tok, tok.encode("1 , 2 , 3 , 4 , 5 , 6 , 7 , 8 ,"), 8) == (False, "no_eos")
    assert is_well_formed(tok, tok.encode("1 , 2 , 3 <eos> 5 , 6 , 7 , 8 ,"), 8) == (False, "wrong_length")
    assert is_well_formed(tok, tok.encode("1 , 2 , 3 , 4 , 5 , 6 , 7 : 8 <eos>"), 8) == (False, "bad_format")
    assert is_well_formed(tok, tok.encode("1 , 2 , 3 , 4 , 5 , 6 , 7 , , <eos>"), 8) == (False, "bad_format")


def test_preference_batch_masks_answer_and_eos():
    rng = np.random.default_rng(0)
    owl = tok.token_id("owl")
    tokens, mask = preference_batch(tok, rng, 50, "animal", [owl])
    assert (mask.sum(1) == 2).all()
    for row, m in zip(tokens.tolist(), mask.tolist()):
        first = m.index(True)
        assert row[first + 1] == owl and row[first + 2] == tok.eos_id
    tokens, _ = preference_batch(tok, rng, 400, "tree")
    answers = set(tokens.flatten().tolist()) & set(tok.trait_ids)
    assert answers == set(tok.category_ids("tree"))  # uniform answers cover the category
