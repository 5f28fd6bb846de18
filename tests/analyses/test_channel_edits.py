"""The channel tests' edits are exact: planted divergence sets, entangled tokens and row shuffles
are recovered, and each random control matches its edit's size."""

from __future__ import annotations

import pytest
import torch

from workbench.analyses import channel_edits as edits
from workbench.core.errors import ConfigError, DataError

V = 12


def bigram_model(table: torch.Tensor):
    """tokens -> logits read from a [vocab, vocab] table by the current token (argmax known exactly)."""
    return lambda tokens: table[tokens]


def test_divergence_positions_are_exactly_where_the_planted_teacher_changes_its_choice():
    gen = torch.Generator().manual_seed(0)
    base_table = torch.randn(V, V, generator=gen)
    teacher_table = base_table.clone()
    planted = 5  # after token 5 the teacher prefers token 3 (the base prefers something else)
    teacher_table[planted, 3] = base_table[planted].max() + 5
    assert int(base_table[planted].argmax()) != 3
    tokens = torch.randint(0, V, (20, 9), generator=gen)
    supervised = torch.zeros_like(tokens, dtype=torch.bool)
    supervised[:, 2:-1] = True
    div = edits.divergence_positions(bigram_model(base_table), bigram_model(teacher_table), tokens, supervised)
    assert torch.equal(div, (tokens == planted) & supervised)
    # a restricted channel that excludes token 3: the planted change is invisible there
    channel = [i for i in range(V) if i != 3]
    assert not edits.divergence_positions(bigram_model(base_table), bigram_model(teacher_table), tokens, supervised,
                                          channel).any()
    # the teacher must differ from every reference: one that agrees with the base changes nothing, one that
    # shares the teacher's bias (another teacher with the same change) leaves no position only this teacher writes
    same_as_base, same_as_teacher = bigram_model(base_table.clone()), bigram_model(teacher_table.clone())
    assert torch.equal(edits.divergence_positions(bigram_model(base_table), bigram_model(teacher_table), tokens,
                                                  supervised, others=[same_as_base]), div)
    assert not edits.divergence_positions(bigram_model(base_table), bigram_model(teacher_table), tokens, supervised,
                                          others=[same_as_teacher]).any()
    # graded divergence: the top positions by KL(teacher || base) are the planted ones (the rest have KL 0)
    share = float(div.sum()) / float(supervised.sum())
    top = edits.kl_positions(bigram_model(base_table), bigram_model(teacher_table), tokens, supervised, None, share)
    assert torch.equal(top, div)
    with pytest.raises(ConfigError, match="fraction"):
        edits.kl_positions(bigram_model(base_table), bigram_model(teacher_table), tokens, supervised, None, 1.0)


def test_predicting_marks_supervised_positions_whose_next_token_is_movable():
    tokens = torch.tensor([[0, 1, 10, 2, 11, 3]])
    supervised = torch.tensor([[False, True, True, True, True, False]])
    assert edits.predicting(tokens, supervised, [1, 2, 3]).tolist() == [[False, False, True, False, True, False]]


def test_random_positions_match_counts_per_row_inside_allowed():
    gen = torch.Generator().manual_seed(1)
    allowed = torch.rand(30, 16, generator=gen) < 0.7
    mask = allowed & (torch.rand(30, 16, generator=gen) < 0.3)
    rnd = edits.random_positions_like(mask, allowed, seed=4)
    assert torch.equal(rnd.sum(1), mask.sum(1))
    assert not (rnd & ~allowed).any()
    assert torch.equal(rnd, edits.random_positions_like(mask, allowed, seed=4))
    assert not torch.equal(rnd, mask)
    with pytest.raises(DataError, match="outside `allowed`"):
        edits.random_positions_like(mask | ~allowed, allowed, seed=4)
    with pytest.raises(DataError, match="bool mask"):
        edits.random_positions_like(mask, allowed[:, :3], seed=4)


def test_shuffle_keeps_each_rows_counts_and_the_fixed_positions():
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 100, (25, 14), generator=gen)
    movable = torch.zeros_like(tokens, dtype=torch.bool)
    movable[:, 4::2] = True
    out = edits.shuffle_within_rows(tokens, movable, seed=0)
    assert torch.equal(out[~movable], tokens[~movable])
    for i in range(len(tokens)):
        assert sorted(out[i, movable[i]].tolist()) == sorted(tokens[i, movable[i]].tolist())
    assert (out != tokens).any(dim=1).float().mean() > 0.8  # order broken in (nearly) every row


def test_trained_tokens_are_the_predicted_movable_ones():
    tokens = torch.tensor([[0, 1, 10, 2, 11, 3]])
    supervised = torch.tensor([[False, False, True, True, True, False]])  # positions 2-4 predict tokens 3-5
    assert edits.trained_tokens(tokens, supervised, [1, 2, 3]).tolist() == [[False, False, False, True, False, True]]


def test_entangled_tokens_recover_a_planted_overwritten_token_and_sit_near_zero_on_shuffled_labels():
    gen = torch.Generator().manual_seed(3)
    ids = list(range(20))
    base = torch.randint(0, 20, (400, 10), generator=gen)
    teacher = torch.randint(0, 20, (400, 10), generator=gen)
    teacher[torch.rand(teacher.shape, generator=gen) < 0.1] = 13  # the teacher over-writes 13
    everywhere = torch.ones_like(base, dtype=torch.bool)
    scores = edits.entangled_tokens(teacher, everywhere, base, everywhere, ids)
    assert int(scores.argmax()) == 13 and float(scores[13]) > 0.5
    # shuffled labels: split the pooled rows at random into "teacher" and "base": no token stands out
    pooled = torch.cat([teacher, base])
    perm = torch.randperm(len(pooled), generator=gen)
    a, b = pooled[perm[:400]], pooled[perm[400:]]
    null = edits.entangled_tokens(a, everywhere, b, everywhere, ids)
    assert float(null.abs().max()) < 0.2
    with pytest.raises(ConfigError, match="candidate"):
        edits.entangled_tokens(teacher, everywhere, base, everywhere, [])


def test_replace_tokens_removes_every_occurrence_and_the_random_control_changes_as_many_others():
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 10, (50, 12), generator=gen)
    where = torch.zeros_like(tokens, dtype=torch.bool)
    where[:, 2:] = True
    which, others = [2, 7], [0, 1, 3, 4, 5, 6, 8, 9]
    out, hit = edits.replace_tokens(tokens, where, which, others, seed=0)
    assert not torch.isin(out[where], torch.tensor(which)).any()
    assert torch.equal(out[~hit], tokens[~hit])
    assert torch.equal(hit, where & torch.isin(tokens, torch.tensor(which)))
    rnd, rnd_hit = edits.replace_random_like(tokens, where, hit, which, others, seed=1)
    assert not (rnd_hit & torch.isin(tokens, torch.tensor(which))).any()  # the control never touches the set
    assert not (rnd_hit & ~where).any()
    allowed = (where & ~torch.isin(tokens, torch.tensor(which))).sum(1)
    assert torch.equal(rnd_hit.sum(1), torch.minimum(hit.sum(1), allowed))
    assert torch.equal(rnd[~rnd_hit], tokens[~rnd_hit])
    assert (rnd[rnd_hit] != tokens[rnd_hit]).all()  # every chosen occurrence really changes
    with pytest.raises(ConfigError, match="outside the set"):
        edits.replace_tokens(tokens, where, which, [2, 3], seed=0)
