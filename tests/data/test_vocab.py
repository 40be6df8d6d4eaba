"""load_vocab / save_vocab, including bert4keras's simplified vocabulary."""

import pytest

from data.vocab import SEQ2SEQ_TOKENS
from data.vocab import is_cjk_character
from data.vocab import is_punctuation
from data.vocab import load_vocab
from data.vocab import save_vocab

STARTS = list(SEQ2SEQ_TOKENS)

# (token, kept by simplification?) in file order; the reason is beside it.
TINY_VOCAB = [
    ("[PAD]", True),  # listed in `startswith`
    ("[unused1]", False),  # '[' is punctuation and the token is long
    ("[UNK]", True),
    ("[CLS]", True),
    ("[SEP]", True),
    ("[MASK]", False),  # not in `startswith`: dropped like any '[..]'
    ("的", True),  # single characters always stay
    ("，", True),
    ("!", True),
    ("中国", False),  # CJK inside a longer token
    ("##国", False),  # the stem is CJK
    ("##，", False),  # the stem is punctuation
    ("a-b", False),  # '-' is punctuation
    ("hello", True),
    ("##llo", True),
    ("##", True),  # empty stem: nothing to object to
    ("x2", True),
]


@pytest.fixture
def tiny_vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t, _ in TINY_VOCAB), "utf-8")
    return path


def test_ids_are_line_indices(tiny_vocab_file):
    token_dict = load_vocab(tiny_vocab_file)
    assert token_dict == {t: i for i, (t, _) in enumerate(TINY_VOCAB)}


def test_simplified_drops_the_bert4keras_tokens(tiny_vocab_file):
    token_dict, keep_tokens = load_vocab(
        tiny_vocab_file, simplified=True, startswith=STARTS
    )
    old_ids = {t: i for i, (t, _) in enumerate(TINY_VOCAB)}
    expected = STARTS + [
        t for t, kept in TINY_VOCAB if kept and t not in STARTS
    ]
    assert list(token_dict) == expected
    assert list(token_dict.values()) == list(range(len(expected)))
    # keep_tokens[new_id] is the old id: the embedding row to keep.
    assert keep_tokens == [old_ids[t] for t in expected]


def test_simplified_without_startswith_drops_specials(tiny_vocab_file):
    token_dict, _ = load_vocab(tiny_vocab_file, simplified=True)
    assert "[PAD]" not in token_dict and "[CLS]" not in token_dict
    assert list(token_dict)[:2] == ["的", "，"]


def test_unknown_startswith_token_is_named(tiny_vocab_file):
    with pytest.raises(KeyError, match=r"\[BOS\]"):
        load_vocab(tiny_vocab_file, simplified=True, startswith=["[BOS]"])


def test_real_vocab_simplified_count(vocab_path):
    """bert4keras keeps 13,584 of the 21,128 Chinese BERT tokens."""
    full = load_vocab(vocab_path)
    token_dict, keep_tokens = load_vocab(
        vocab_path, simplified=True, startswith=STARTS
    )
    assert len(full) == 21128
    assert (len(token_dict), len(keep_tokens)) == (13584, 13584)
    assert keep_tokens[:4] == [0, 100, 101, 102]
    assert keep_tokens[4:] == sorted(keep_tokens[4:])
    inverse = {i: t for t, i in full.items()}
    assert all(inverse[keep_tokens[i]] == t for t, i in token_dict.items())
    assert "中" in token_dict and "##中" not in token_dict
    assert "[MASK]" not in token_dict


def test_first_field_of_a_line_is_the_token(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\nword 17\n\n##x\textra\n", "utf-8")
    assert load_vocab(path) == {"[PAD]": 0, "word": 1, "": 2, "##x": 3}


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        load_vocab(path)
    assert info.value.__context__ is None


def test_duplicate_token_names_both_lines(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\na\n", "utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt:3: .*'a'.*line 1"):
        load_vocab(path)


def test_save_then_load_round_trip(tiny_vocab_file, tmp_path):
    token_dict, _ = load_vocab(
        tiny_vocab_file, simplified=True, startswith=STARTS
    )
    path = tmp_path / "small.txt"
    save_vocab(path, token_dict)
    assert load_vocab(path) == token_dict


@pytest.mark.parametrize(
    "ch, cjk, punct",
    [
        ("中", True, False),
        ("，", False, True),
        ("$", False, True),
        ("a", False, False),
        ("\u3042", False, False),  # hiragana is not CJK for BERT
        ("\U00020000", True, False),
    ],
)
def test_character_classes(ch, cjk, punct):
    assert (is_cjk_character(ch), is_punctuation(ch)) == (cjk, punct)
