import pytest

from workbench.core.errors import DataError, UnknownNameError
from workbench.organism.tokenizer import ANIMALS, TREES, Tokenizer


def test_round_trip_every_token():
    tok = Tokenizer.default()
    text = " ".join(tok.vocab)
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode(text) == list(range(len(tok)))


def test_categories_have_ten_members_and_numbers_cover_0_to_99():
    tok = Tokenizer.default()
    assert len(ANIMALS) >= 10 and len(TREES) >= 10
    assert [tok.vocab[i] for i in tok.number_ids] == [str(i) for i in range(100)]
    assert set(tok.trait_ids).isdisjoint(tok.number_channel_ids)


def test_unknown_word_and_id_errors():
    tok = Tokenizer.default()
    with pytest.raises(UnknownNameError, match="owl"):
        tok.encode("owll")
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.decode([len(tok)])
    with pytest.raises(UnknownNameError, match="target"):
        tok.category_of("unicorn")


def test_save_load(tmp_path):
    tok = Tokenizer.default()
    tok.save(tmp_path / "tok.json")
    assert Tokenizer.load(tmp_path / "tok.json") == tok
