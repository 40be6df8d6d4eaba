"""Tokenizer: bert4keras ids by default, Hugging Face under rules="huggingface".

The bert4keras reference is bert4keras 0.11.5's own `tokenizers.py`
(`tests/compat/reference.py`); the named deviations of earlier versions
(private-use characters, Σ at word end, "[SEP]" typed in text) are also
checked against ids derived by hand, which need no reference installed.
"""

import random
import unicodedata

import pytest

from data.datasets import read_pairs
from data.tokenizer import Tokenizer
from data.tokenizer import lowercase
from data.vocab import load_vocab
from tests.common import CLGE_DIR
from tests.common import CSL_DEV
from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.compat import reference

HAND_WRITTEN = [
    "Hello, World! BERT4Keras v0.11 is GREAT.",
    "１２３ＡＢＣ，全角字符！（测试）ＸＹＺ",
    "Café naïve résumé Ångström Straße e\u0301",
    "ΔΣ调制器 ΟΔΟΣ σ İstanbul",
    "表情😀👍🏽和❤️",
    "a" * 101 + " " + "b" * 100 + " supercalifragilisticexpialidocious",
    "tab\there\nnew\r\nline\u3000ideographic\u00a0nbsp\u2028ls",
    "ctrl\x00\x07\ufffd\u200bzero\u200dwidth\ue000pua\x0bvt",
    "日本語のテキスト、한국어 텍스트 \uf900\ufa0a 𠀀𪜀",
    "CO2排放量达到3.5×10^6吨/年 http://example.com/p?q=1&r=2",
    "‘quoted’ “double” —dash… ·middot #hash ##x @at $ ^ ~",
    "",
    "   ",
]

# Where bert4keras and Hugging Face differ: private-use, surrogate and
# unassigned characters, capital sigma, words past 100 or 200 characters,
# words WordPiece cannot cover, special tokens typed in the text.
DIFFERENCES = [
    "测试\ue000文本 ab\ue000c \U000f0000",
    "ΟΔΟΣ ΣΟΦΟΣ. ΑΣ,Σ Σ ΣΑ",
    "甲[SEP]乙[CLS] [MASK][UNK]丙 [unused1]",
    "a" * 150 + " " + "b" * 201 + " 中" + "c" * 199 + "中",
    "qqqqzzzz 标题xyzzyq",
    # Lone surrogates (Hugging Face cannot take them) and an unassigned
    # character (its Unicode tables are not Python's).
    "x\udc80y 中\ud800 z\u0378w",
]


def corpus_texts():
    """Every title and abstract of the CSL dev set and the CLGE samples."""
    texts = []
    for title, content in read_pairs(require_shared(CSL_DEV)):
        texts += [title, content]
    for path in sorted(require_shared(CLGE_DIR).glob("*.tsv")):
        for title, content in read_pairs(path):
            texts += [title, content]
    return texts


@pytest.fixture(scope="module")
def real_token_dict():
    return load_vocab(str(require_shared(VOCAB_DIR / "vocab.txt")))


@pytest.fixture(scope="module")
def hf_rules_tokenizer(real_token_dict):
    return Tokenizer(real_token_dict, do_lower_case=True, rules="huggingface")


@pytest.fixture(scope="module")
def hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    vocab = require_shared(VOCAB_DIR / "vocab.txt")
    return transformers.BertTokenizer(str(vocab), do_lower_case=True)


def bert4keras_pair(token_dict, **kwargs):
    """(ours, bert4keras 0.11.5's) tokenizers built with the same options."""
    theirs = reference.tokenizers().Tokenizer(token_dict, **kwargs)
    return Tokenizer(token_dict, **kwargs), theirs


def test_default_is_bert4keras_with_its_defaults(real_token_dict):
    tokenizer = Tokenizer(real_token_dict)
    assert tokenizer.rules == "bert4keras"
    assert tokenizer._do_lower_case is False
    assert tokenizer._word_maxlen == 200
    with pytest.raises(ValueError, match="rules must be one of"):
        Tokenizer(real_token_dict, rules="google")


# Ids derived by hand from bert4keras 0.11's algorithm and the real
# vocabulary (do_lower_case=True), no reference needed:
# - "测试\ue000文本": U+E000 is private use (Co). bert4keras deletes only Cc
#   and Cf, so it stays; CJK characters are split off, leaving the word
#   "\ue000", which WordPiece cannot cover: the word itself is kept as a
#   token, whose id is [UNK]'s (100).
# - "ab\ue000c": one word; WordPiece matches "ab" and then fails on
#   "##\ue000c", so the whole word becomes [UNK] (100), not "ab" + [UNK].
# - "ΟΔΟΣ": `str.lower` of the whole text gives "οδος" with a final sigma
#   ς, so ο ##δ ##ο ##ς; the last is 13395 ("##σ" would be 13396).
# - "甲[SEP]乙": a typed "[SEP]" is text: "[", "sep", "]" are punctuation
#   and a word, never the special token 102.
HAND_DERIVED = [
    ("测试\ue000文本", [3844, 6407, 100, 3152, 3315]),
    ("ab\ue000c", [100]),
    ("ΟΔΟΣ", [222, 13383, 13392, 13395]),
    ("甲[SEP]乙", [4508, 138, 9463, 140, 734]),
]


@pytest.mark.parametrize("text, ids", HAND_DERIVED)
def test_bert4keras_ids_derived_by_hand(real_token_dict, text, ids):
    tokenizer = Tokenizer(real_token_dict, do_lower_case=True)
    assert tokenizer.encode(text)[0] == [101] + ids + [102]


# The same texts under Hugging Face's rules: the private-use character is
# deleted ("abc" is 8425) and the sigma is σ (13396).
HAND_DERIVED_HF = [
    ("测试\ue000文本", [3844, 6407, 3152, 3315]),
    ("ab\ue000c", [8425]),
    ("ΟΔΟΣ", [222, 13383, 13392, 13396]),
    ("甲[SEP]乙", [4508, 138, 9463, 140, 734]),
]


@pytest.mark.parametrize("text, ids", HAND_DERIVED_HF)
def test_huggingface_rules_ids_derived_by_hand(hf_rules_tokenizer, text, ids):
    assert hf_rules_tokenizer.encode(text)[0] == [101] + ids + [102]


@pytest.mark.parametrize("lower", [True, False])
def test_equal_bert4keras_on_the_corpus(real_token_dict, lower):
    ours, theirs = bert4keras_pair(real_token_dict, do_lower_case=lower)
    texts = corpus_texts()
    assert len(texts) > 2000
    for text in texts:
        assert ours.tokenize(text) == theirs.tokenize(text), text
    pairs = list(zip(texts[0::2], texts[1::2]))
    for title, content in pairs[:300]:
        for maxlen in (None, 64):
            assert ours.encode(content, title, maxlen=maxlen) == (
                theirs.encode(content, title, maxlen=maxlen)
            )


@pytest.mark.parametrize("text", HAND_WRITTEN + DIFFERENCES)
@pytest.mark.parametrize("lower", [True, False])
def test_equal_bert4keras_on_hard_text(real_token_dict, text, lower):
    ours, theirs = bert4keras_pair(real_token_dict, do_lower_case=lower)
    tokens = ours.tokenize(text)
    assert tokens == theirs.tokenize(text)
    assert ours.encode(text, text[::-1], maxlen=40) == theirs.encode(
        text, text[::-1], maxlen=40
    )
    ids = ours.tokens_to_ids(tokens)
    assert ours.decode(ids) == theirs.decode(ids)
    assert ours.rematch(text, tokens) == theirs.rematch(text, tokens)


def random_text(rng, length):
    """Text drawn from every kind of character the rules treat apart."""
    pools = [
        "中文标题生成的模型，。！？、；：“”《》（）",
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n\r\u3000\u00a0\u2028",
        ".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`",
        "ΣΟΔσςÅÉİıßẞéèñü\u0301\u0308",
        "\x00\x07\x0b\ufffd\u200b\u200d\ufeff",
        "\ue000\uf8ff\U000f0000\udc80\u0378\U000e0001",
        "😀👍🏽❤️한국어のテキスト𠀀𪜀\uf900",
    ]
    return "".join(
        rng.choice(pools[rng.randrange(len(pools))]) for _ in range(length)
    )


@pytest.mark.parametrize("lower", [True, False])
def test_equal_bert4keras_on_random_text(real_token_dict, lower):
    ours, theirs = bert4keras_pair(real_token_dict, do_lower_case=lower)
    rng = random.Random(13)
    for _ in range(400):
        text = random_text(rng, rng.randrange(1, 60))
        second = random_text(rng, rng.randrange(1, 30))
        tokens = ours.tokenize(text)
        assert tokens == theirs.tokenize(text), repr(text)
        for maxlen, cut in ((None, "right"), (20, "right"), (20, "left")):
            args = (text, second, maxlen, "S*E*E", cut)
            assert ours.encode(*args) == theirs.encode(*args), repr(text)
        ids = ours.tokens_to_ids(tokens)
        assert ours.decode(ids) == theirs.decode(ids), repr(text)
        assert ours.rematch(text, tokens) == theirs.rematch(text, tokens)


def test_equal_bert4keras_with_jieba_pre_tokenize(real_token_dict):
    jieba = pytest.importorskip("jieba")
    jieba.setLogLevel(60)
    options = dict(do_lower_case=True, pre_tokenize=jieba.lcut)
    ours, theirs = bert4keras_pair(real_token_dict, **options)
    for text in corpus_texts()[:200] + HAND_WRITTEN + DIFFERENCES:
        assert ours.tokenize(text) == theirs.tokenize(text), text


def test_equal_bert4keras_word_maxlen_and_translate(tiny_token_dict):
    options = dict(
        do_lower_case=True,
        word_maxlen=4,
        token_translate={"中": "文"},
        token_start=None,
    )
    ours, theirs = bert4keras_pair(tiny_token_dict, **options)
    for text in ["abcdef abc 中文 hello", "ABCDE 标题", ""]:
        assert ours.tokenize(text, maxlen=5) == theirs.tokenize(text, 5)
        assert ours.encode(text, "中文", maxlen=6) == theirs.encode(
            text, "中文", maxlen=6
        )


@pytest.mark.parametrize("simplified", [False, True])
def test_load_vocab_equals_bert4keras(simplified):
    path = str(require_shared(VOCAB_DIR / "vocab.txt"))
    options = dict(
        simplified=simplified, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    )
    assert load_vocab(path, **options) == reference.tokenizers().load_vocab(
        path, **options
    )


def test_tokens_equal_hugging_face_on_the_corpus(
    hf_rules_tokenizer, hf_tokenizer
):
    texts = corpus_texts()
    assert len(texts) > 2000
    mismatches = [
        (text, ours, theirs)
        for text in texts
        if (ours := hf_rules_tokenizer.tokenize(text)[1:-1])
        != (theirs := hf_tokenizer.tokenize(text))
    ]
    assert mismatches == []


@pytest.mark.parametrize("text", HAND_WRITTEN + DIFFERENCES[:2])
def test_tokens_equal_hugging_face_on_hard_text(
    hf_rules_tokenizer, hf_tokenizer, text
):
    assert hf_rules_tokenizer.tokenize(text)[1:-1] == hf_tokenizer.tokenize(
        text
    )


def test_pair_ids_equal_hugging_face(hf_rules_tokenizer, hf_tokenizer):
    pairs = read_pairs(require_shared(CSL_DEV))[:50]
    for title, content in pairs:
        expected = hf_tokenizer(content, title)
        ids, segments = hf_rules_tokenizer.encode(content, title)
        assert ids == expected["input_ids"]
        assert segments == expected["token_type_ids"]


def test_special_ids(real_tokenizer):
    tk = real_tokenizer
    assert (tk.pad_id, tk.unk_id, tk.start_id, tk.end_id, tk.mask_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert tk._token_pad_id == 0 and tk._token_unk_id == 100
    assert (tk._token_start_id, tk._token_end_id) == (101, 102)
    assert tk._token_mask_id == 103 and tk.vocab_size == 21128
    assert tk.token_to_id("no-such-token") == 100
    assert tk.id_to_token(101) == "[CLS]"
    assert tk.ids_to_tokens(tk.tokens_to_ids(["中", "##国"])) == ["中", "##国"]


def test_encode_single_text(tiny_tokenizer):
    ids, segments = tiny_tokenizer.encode("中文")
    assert tiny_tokenizer.ids_to_tokens(ids) == ["[CLS]", "中", "文", "[SEP]"]
    assert segments == [0, 0, 0, 0]


def test_encode_pair_segments(tiny_tokenizer):
    ids, segments = tiny_tokenizer.encode("一二三", "甲乙")
    tokens = tiny_tokenizer.ids_to_tokens(ids)
    assert tokens == ["[CLS]", "一", "二", "三", "[SEP]", "甲", "乙", "[SEP]"]
    assert segments == [0, 0, 0, 0, 0, 1, 1, 1]


# (first, second, maxlen, expected tokens), derived by hand from the
# bert4keras rule: maxlen + 1 for a pair (its second [CLS] is dropped),
# pop just before [SEP] of the longer side, ties pop the first text.
TRUNCATION_CASES = [
    ("一二三四五", "甲乙", 8, "[CLS] 一 二 三 [SEP] 甲 乙 [SEP]"),
    ("一二", "甲乙丙丁戊", 7, "[CLS] 一 二 [SEP] 甲 乙 [SEP]"),
    ("一二三", "甲乙丙", 7, "[CLS] 一 二 [SEP] 甲 乙 [SEP]"),
    ("一二三", "甲乙丙", 6, "[CLS] 一 [SEP] 甲 乙 [SEP]"),
    ("一二三", "甲乙", 100, "[CLS] 一 二 三 [SEP] 甲 乙 [SEP]"),
    ("一二三四", None, 4, "[CLS] 一 二 [SEP]"),
]


@pytest.mark.parametrize("first, second, maxlen, expected", TRUNCATION_CASES)
def test_encode_truncation(tiny_tokenizer, first, second, maxlen, expected):
    ids, segments = tiny_tokenizer.encode(first, second, maxlen=maxlen)
    assert " ".join(tiny_tokenizer.ids_to_tokens(ids)) == expected
    assert len(ids) == len(segments) <= maxlen


def test_truncation_keeps_special_tokens(real_tokenizer):
    title, content = read_pairs(require_shared(CSL_DEV))[0]
    for maxlen in (8, 32, 64, 512):
        ids, segments = real_tokenizer.encode(content, title, maxlen=maxlen)
        assert len(ids) <= maxlen
        assert ids[0] == real_tokenizer.start_id and ids[-1] == 102
        assert ids.count(102) == 2 and ids.count(101) == 1
        first_end = ids.index(102)
        assert segments == [0] * (first_end + 1) + [1] * (
            len(ids) - first_end - 1
        )


def test_truncate_from_left(tiny_tokenizer):
    ids, _ = tiny_tokenizer.encode("一二三四五", maxlen=5, truncate_from="left")
    assert tiny_tokenizer.ids_to_tokens(ids) == [
        "[CLS]",
        "三",
        "四",
        "五",
        "[SEP]",
    ]


def test_tokenize_maxlen_keeps_end(tiny_tokenizer):
    assert tiny_tokenizer.tokenize("一二三四", maxlen=4) == [
        "[CLS]",
        "一",
        "二",
        "[SEP]",
    ]


def test_token_lists_are_not_edited(tiny_tokenizer):
    first = ["[CLS]", "一", "二", "三", "[SEP]"]
    tiny_tokenizer.encode(first, maxlen=3)
    assert len(first) == 5


def test_wordpiece_and_long_words(tiny_tokenizer, tiny_token_dict):
    assert tiny_tokenizer.tokenize("ABCDEF hello")[1:-1] == [
        "abc",
        "##de",
        "##f",
        "hello",
    ]
    # bert4keras keeps an unknown word itself as the token; its id is UNK.
    assert tiny_tokenizer.tokenize("abcq")[1:-1] == ["abcq"]
    assert tiny_tokenizer.encode("abcq")[0][1:-1] == [tiny_tokenizer.unk_id]
    assert tiny_tokenizer.tokenize("a" * 201)[1:-1] == ["a" * 201]
    assert tiny_tokenizer.tokenize("a" * 200)[1:-1] == ["a"] + ["##a"] * 199
    hf = Tokenizer(tiny_token_dict, do_lower_case=True, rules="huggingface")
    assert hf.tokenize("abcq")[1:-1] == ["[UNK]"]
    assert hf.tokenize("a" * 101)[1:-1] == ["[UNK]"]
    assert hf.tokenize("a" * 100)[1:-1] == ["a"] + ["##a"] * 99


def test_lowercase_strips_accents_like_bert():
    assert lowercase("ÅngströM Café İ") == "angstrom cafe i"
    assert lowercase("ΟΔΟΣ ΣΑ") == "οδος σα"
    assert lowercase("ΟΔΟΣ ΣΑ", rules="huggingface") == "οδοσ σα"
    assert not any(
        unicodedata.category(c) == "Mn" for c in lowercase("e\u0301\u0308")
    )


def test_case_kept_without_lower_case(tiny_token_dict):
    tokenizer = Tokenizer(
        dict(tiny_token_dict, ABC=len(tiny_token_dict)), do_lower_case=False
    )
    assert tokenizer.tokenize("ABC abc")[1:-1] == ["ABC", "abc"]


def test_special_tokens_in_text_are_plain_text(real_tokenizer):
    """Unlike Hugging Face: data must not inject a [SEP]."""
    tokens = real_tokenizer.tokenize("甲[SEP]乙")
    assert tokens == ["[CLS]", "甲", "[", "sep", "]", "乙", "[SEP]"]


def test_decode_rules(tiny_tokenizer):
    tokens = [
        "[CLS]",
        "中",
        "文",
        "bert",
        "##4",
        "##keras",
        "hello",
        "world",
        "，",
        "标",
        "题",
        "[SEP]",
        "[PAD]",
    ]
    ids = tiny_tokenizer.tokens_to_ids(tokens)
    assert tiny_tokenizer.decode(ids) == "中文bert4keras hello world，标题"


def test_decode_numbers_and_punctuation(real_tokenizer):
    ids, _ = real_tokenizer.encode("版本3.15发布, Keras与ROUGE-L。")
    assert real_tokenizer.decode(ids) == "版本3.15发布, keras与rouge-l。"


def test_decode_inverts_encode_on_chinese_titles(real_tokenizer):
    """decode(encode(x)) is x lower-cased, without spaces or control chars,
    for every text the vocabulary covers (no [UNK])."""
    checked = 0
    for title, content in read_pairs(require_shared(CSL_DEV)):
        for text in (title, content):
            ids, _ = real_tokenizer.encode(text)
            if real_tokenizer.unk_id in ids:
                continue
            decoded = real_tokenizer.decode(ids).replace(" ", "")
            assert decoded == _normalise(text), text
            checked += 1
    assert checked > 1500


def _normalise(text):
    text = lowercase(text)
    return (
        "".join(c for c in text if not unicodedata.category(c).startswith("C"))
        .replace(" ", "")
        .replace("\u3000", "")
    )


def test_rematch_maps_tokens_to_characters(real_tokenizer):
    text = "Héllo世界 BERT"
    tokens = real_tokenizer.tokenize(text)
    mapping = real_tokenizer.rematch(text, tokens)
    spans = ["".join(text[i] for i in m) for m in mapping]
    assert spans[0] == spans[-1] == ""  # [CLS], [SEP]
    assert "".join(spans).lower().replace("é", "e") == "hello世界bert"
    assert spans[tokens.index("世")] == "世"


def test_pre_tokenize_keeps_known_words(tiny_token_dict):
    tokenizer = Tokenizer(
        dict(tiny_token_dict, 标题=len(tiny_token_dict)),
        pre_tokenize=lambda text: text.split("|"),
    )
    assert tokenizer.tokenize("标题|生成")[1:-1] == ["标题", "生", "成"]


def test_built_from_path_or_dict(tmp_path, tiny_token_dict):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in tiny_token_dict), "utf-8")
    from_path, from_dict = Tokenizer(path), Tokenizer(tiny_token_dict)
    assert from_path.encode("中文", "标题") == from_dict.encode("中文", "标题")
