"""MLM masking: rates, whole words, special tokens, labels."""

import numpy as np
import pytest

from data import Tokenizer
from data import load_vocab
from data.masking import jieba_word_starts
from data.masking import mask_tokens
from data.masking import select_tokens
from data.vocab import SPECIAL_TOKENS

PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = [PAD, UNK, CLS, SEP]
VOCAB_SIZE = 1000


def random_sequences(count, rng, length=128):
    """[CLS] tokens [SEP] [PAD]...: varying lengths, ids from 5 up."""
    sequences = []
    for _ in range(count):
        used = int(rng.integers(20, length - 2))
        body = rng.integers(5, VOCAB_SIZE, used)
        sequence = np.zeros(length, np.int64)
        sequence[: used + 2] = np.concatenate([[CLS], body, [SEP]])
        sequences.append(sequence)
    return sequences


def random_word_starts(length, rng):
    """Words of 1 to 4 tokens, as jieba gives for Chinese."""
    starts = np.zeros(length, bool)
    position = 0
    while position < length:
        starts[position] = True
        position += int(rng.integers(1, 5))
    return starts


def mask_many(count=300, seed=0, whole_word=False):
    rng = np.random.default_rng(seed)
    results = []
    for ids in random_sequences(count, rng):
        starts = random_word_starts(len(ids), rng) if whole_word else None
        inputs, labels = mask_tokens(
            ids, rng, VOCAB_SIZE, MASK, SPECIAL, word_starts=starts
        )
        results.append((ids, starts, inputs, labels))
    return results


@pytest.mark.parametrize("whole_word", [False, True])
def test_selected_share_is_the_rate(whole_word):
    results = mask_many(whole_word=whole_word)
    selected = sum(int((labels != 0).sum()) for _, _, _, labels in results)
    maskable = sum(int((ids > SEP).sum()) for ids, _, _, _ in results)
    assert selected / maskable == pytest.approx(0.15, abs=0.01)


def test_selected_tokens_split_80_10_10():
    results = mask_many(count=400)
    kinds = {"mask": 0, "random": 0, "kept": 0}
    for ids, _, inputs, labels in results:
        chosen = labels != 0
        kinds["mask"] += int((inputs[chosen] == MASK).sum())
        kinds["kept"] += int((inputs[chosen] == ids[chosen]).sum())
        kinds["random"] += int(
            ((inputs[chosen] != MASK) & (inputs[chosen] != ids[chosen])).sum()
        )
    total = sum(kinds.values())
    # About 7,500 selected tokens: one standard deviation is under 0.005.
    assert kinds["mask"] / total == pytest.approx(0.8, abs=0.025)
    assert kinds["random"] / total == pytest.approx(0.1, abs=0.02)
    assert kinds["kept"] / total == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("whole_word", [False, True])
def test_special_tokens_are_never_masked(whole_word):
    for ids, _, inputs, labels in mask_many(whole_word=whole_word):
        special = np.isin(ids, SPECIAL)
        assert (inputs[special] == ids[special]).all()
        assert (labels[special] == 0).all()
        # Random replacements never bring in a special token either.
        changed = inputs != ids
        assert not np.isin(inputs[changed], SPECIAL).any()


def test_labels_are_set_exactly_at_the_selected_tokens():
    for ids, _, inputs, labels in mask_many():
        chosen = labels != 0
        assert (labels[chosen] == ids[chosen]).all()
        # Every corrupted token is a target; untouched ones are not
        # (a "kept" token is a target that looks untouched).
        assert chosen[inputs != ids].all()
        budget = round(0.15 * int((ids > SEP).sum()))
        assert chosen.sum() == budget


def test_select_tokens_takes_whole_words_within_the_budget():
    special = np.zeros(10, bool)
    starts = np.array([1, 0, 0, 0, 0, 0, 1, 0, 0, 1], bool)
    selected = select_tokens(special, np.random.default_rng(0), 0.4, starts)
    # The budget is 4 tokens: the 6-token word never fits, 3 + 1 do.
    assert selected.tolist() == [False] * 6 + [True] * 4


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_is_deterministic_for_a_seed(whole_word):
    first = mask_many(count=5, seed=3, whole_word=whole_word)
    second = mask_many(count=5, seed=3, whole_word=whole_word)
    for a, b in zip(first, second):
        assert (a[2] == b[2]).all() and (a[3] == b[3]).all()


def test_whole_word_masking_never_splits_a_word():
    for ids, starts, _, labels in mask_many(whole_word=True):
        word = np.cumsum(starts)
        chosen = labels != 0
        for index in np.unique(word[chosen]):
            in_word = (word == index) & (ids > SEP)
            assert chosen[in_word].all()


@pytest.fixture(scope="module")
def tokenizer():
    from tests.common import VOCAB_DIR
    from tests.common import require_shared

    path = require_shared(VOCAB_DIR / "vocab.txt")
    token_dict, _ = load_vocab(
        str(path), simplified=True, startswith=SPECIAL_TOKENS
    )
    return Tokenizer(token_dict, do_lower_case=True)


TEXT = (
    "使用BERT模型进行中文自然语言处理，准确率达到95.3%。"
    "Transformer结构在NLP任务中表现优异"
)


def test_jieba_word_starts_match_jieba_words(tokenizer):
    import jieba

    ids, starts = jieba_word_starts(TEXT, tokenizer)
    tokens = tokenizer.tokenize(TEXT)[1:-1]
    # Tokenization is the plain one: whole-word masking changes no id.
    assert ids == tokenizer.tokens_to_ids(tokens)
    word_of_char = np.repeat(
        np.arange(len(jieba.lcut(TEXT))), [len(w) for w in jieba.lcut(TEXT)]
    )
    spans = tokenizer.rematch(TEXT, tokens)
    words = [word_of_char[span[0]] for span in spans]
    expected = [i == 0 or words[i] != words[i - 1] for i in range(len(words))]
    assert starts.tolist() == expected
    # "自然语言" is one jieba word of four tokens: one start.
    first = tokens.index("自")
    assert starts[first : first + 4].tolist() == [True, False, False, False]


def test_jieba_words_are_masked_together(tokenizer):
    ids, starts = jieba_word_starts(TEXT, tokenizer)
    ids = np.array([tokenizer.start_id, *ids, tokenizer.end_id])
    starts = np.concatenate([[True], starts, [True]])
    word = np.cumsum(starts)
    rng = np.random.default_rng(0)
    special = [0, tokenizer.unk_id, tokenizer.start_id, tokenizer.end_id]
    for _ in range(50):
        _, labels = mask_tokens(
            ids,
            rng,
            tokenizer.vocab_size,
            tokenizer.mask_id,
            special,
            word_starts=starts,
        )
        chosen = labels != 0
        for index in np.unique(word[chosen]):
            assert chosen[word == index].all()


def test_a_segmentation_that_loses_characters_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="does not cover"):
        jieba_word_starts("中文文本", tokenizer, cut=lambda _: ["中文"])
