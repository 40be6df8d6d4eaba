"""BERT WordPiece tokenizer with the bert4keras 0.11 interface and ids.

By default (`rules="bert4keras"`) tokens and ids equal bert4keras 0.11's
`Tokenizer` on every input, which follows Google's original BERT
tokenizer: a model fine-tuned under bert4keras sees the same ids here.
`encode`, `decode`, `rematch` and the `_token_*_id` attributes behave as in
bert4keras, so a ported script only changes its imports.

`rules="huggingface"` follows Hugging Face's `BertTokenizer` instead. The
two differ on rare text only:

- private-use, surrogate and unassigned characters (Unicode `Co`, `Cs`,
  `Cn`): bert4keras keeps them, so the word holding one becomes `[UNK]`;
  Hugging Face deletes them;
- lower-casing: bert4keras lowers the whole text with `str.lower`, so a
  word-final capital sigma becomes `ς`; Hugging Face lowers character by
  character and writes `σ` everywhere;
- a word that WordPiece cannot cover, or longer than `word_maxlen` (200
  for bert4keras, 100 for Hugging Face): bert4keras keeps the word itself
  as its token (its id is `[UNK]`'s), Hugging Face writes `[UNK]`.

Under both rules special tokens typed inside the text (`"[SEP]"`) are split
like any other text, as bert4keras does, so raw data can never inject a
segment boundary (Hugging Face would read them as special tokens).
"""

import os
import re
import unicodedata
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence

from data.vocab import is_bert_control
from data.vocab import is_cjk_character
from data.vocab import is_control
from data.vocab import is_punctuation
from data.vocab import is_space
from data.vocab import load_vocab
from data.vocab import stem

# Full-width and CJK punctuation after which `decode` writes no space.
CJK_PUNCTUATION = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c"
    "\uff0d\uff0f\uff1a\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d"
    "\uff3e\uff3f\uff40\uff5b\uff5c\uff5d\uff5e\uff5f\uff60\uff62\uff63"
    "\uff64\u3000\u3001\u3003\u3008\u3009\u300a\u300b\u300c\u300d\u300e"
    "\u300f\u3010\u3011\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b"
    "\u301c\u301d\u301e\u301f\u3030\u303e\u303f\u2013\u2014\u2018\u2019"
    "\u201b\u201c\u201d\u201e\u201f\u2026\u2027\ufe4f\ufe51\ufe54\u00b7"
    "\uff01\uff1f\uff61\u3002"
)
_NO_SPACE_AFTER = re.compile(
    "(%s) " % "|".join(re.escape(p) for p in CJK_PUNCTUATION + "+-/={(<[")
)


def truncate_sequences(
    maxlen: int, indices: int | Sequence[int], *sequences: list
) -> list[list]:
    """Pop from the longest sequence until the total fits `maxlen`.

    `indices` says where to pop (bert4keras passes -2 to keep `[SEP]`);
    ties go to the first sequence. The lists are changed in place.
    """
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    while True:
        lengths = [len(s) for s in sequences]
        if sum(lengths) <= maxlen:
            return sequences
        longest = lengths.index(max(lengths))
        sequences[longest].pop(indices[longest])


RULES = ("bert4keras", "huggingface")

# Longest word WordPiece tries to split, per rules; longer words are unknown.
_WORD_MAXLEN = {"bert4keras": 200, "huggingface": 100}


def lowercase(text: str, rules: str = "bert4keras") -> str:
    """Lower-case and strip accents the way BERT's uncased models expect.

    bert4keras lowers the whole text with `str.lower`, whose capital sigma
    becomes `ς` at the end of a word; Hugging Face's tokenizer lowers
    character by character, so `σ` everywhere. NFD then drops combining
    marks.
    """
    if rules == "huggingface":
        text = text.replace("\u03a3", "\u03c3")
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def is_deleted(ch: str, rules: str = "bert4keras") -> bool:
    """Characters the tokenizer drops: NUL, U+FFFD and controls."""
    control = is_control if rules == "huggingface" else is_bert_control
    return ord(ch) in (0, 0xFFFD) or control(ch)


def split_words(text: str, rules: str = "bert4keras") -> list[str]:
    """BERT's basic tokenizer: clean, split on spaces, CJK and punctuation."""
    pieces = []
    for ch in text:
        if is_punctuation(ch) or is_cjk_character(ch):
            pieces.append(f" {ch} ")
        elif is_space(ch):
            pieces.append(" ")
        elif not is_deleted(ch, rules):
            pieces.append(ch)
    return "".join(pieces).split()


class TokenizerBase:
    """What every tokenizer shares: special tokens, ids, framing, `encode`.

    bert4keras's `TokenizerBase`: a subclass gives `_tokenize(text)` (the
    tokens of a text, unframed) and `decode(ids)`; `token_dict` maps every
    token of the vocabulary to its id.
    """

    def __init__(
        self,
        token_dict: dict[str, int],
        token_start: str | None = "[CLS]",
        token_end: str | None = "[SEP]",
        pre_tokenize: Callable[[str], Iterable[str]] | None = None,
        token_translate: dict[str, str] | None = None,
        token_pad: str = "[PAD]",
        token_unk: str = "[UNK]",
    ):
        self._token_dict = token_dict
        self._token_dict_inv = {i: t for t, i in token_dict.items()}
        self._vocab_size = len(token_dict)
        self._pre_tokenize = pre_tokenize
        self._token_translate = token_translate or {}
        self._token_translate_inv = {
            new: old for old, new in self._token_translate.items()
        }
        self._token_pad, self._token_unk = token_pad, token_unk
        self._token_mask = "[MASK]"
        self._token_start, self._token_end = token_start, token_end
        # bert4keras exposes these private names; scripts read them.
        self._token_pad_id = token_dict.get(self._token_pad)
        self._token_unk_id = token_dict.get(self._token_unk)
        self._token_mask_id = token_dict.get(self._token_mask)
        self._token_start_id = token_dict.get(token_start)
        self._token_end_id = token_dict.get(token_end)

    @property
    def pad_id(self) -> int | None:
        return self._token_pad_id

    @property
    def unk_id(self) -> int | None:
        return self._token_unk_id

    @property
    def start_id(self) -> int | None:
        return self._token_start_id

    @property
    def end_id(self) -> int | None:
        return self._token_end_id

    @property
    def mask_id(self) -> int | None:
        return self._token_mask_id

    @property
    def vocab_size(self) -> int:
        return len(self._token_dict)

    def token_to_id(self, token: str) -> int:
        """Unknown tokens map to the unknown token's id, never raise."""
        return self._token_dict.get(token, self._token_unk_id)

    def id_to_token(self, i: int) -> str:
        return self._token_dict_inv[int(i)]

    def tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_token(i) for i in ids]

    def tokenize(self, text: str, maxlen: int | None = None) -> list[str]:
        """Tokens framed by start/end; `maxlen` cuts before the end token."""
        tokens = [
            self._token_translate.get(token) or token
            for token in self._tokenize(text)
        ]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            truncate_sequences(maxlen, self._right_cut_index(), tokens)
        return tokens

    def encode(
        self,
        first_text: str | list[str],
        second_text: str | list[str] | None = None,
        maxlen: int | None = None,
        pattern: str = "S*E*E",
        truncate_from: str | int = "right",
    ) -> tuple[list[int], list[int]]:
        """Return `(token_ids, segment_ids)` for one text or a pair.

        With pattern `S*E*E` a pair is `[CLS] a [SEP] b [SEP]`, segment 0
        for `[CLS] a [SEP]` and 1 for `b [SEP]`. Over `maxlen`, tokens are
        popped from the longer side (`truncate_from`: 'right' pops just
        before its `[SEP]`, 'left' just after `[CLS]`), so the total is at
        most `maxlen` and the special tokens always stay.
        """
        first = self._as_tokens(first_text)
        second = None if second_text is None else self._as_tokens(second_text)
        if maxlen is not None:
            if second is not None and pattern == "S*E*E":
                maxlen += 1  # the second [CLS] is dropped below
            index = self._cut_index(truncate_from)
            truncate_sequences(maxlen, index, first, second)
        token_ids = self.tokens_to_ids(first)
        segment_ids = [0] * len(token_ids)
        if second is not None:
            if pattern == "S*E*E":
                second = second[int(bool(self._token_start)) :]
            token_ids.extend(self.tokens_to_ids(second))
            segment_ids.extend([1] * len(second))
        return token_ids, segment_ids

    def _as_tokens(self, text: str | list[str]) -> list[str]:
        """A copy, so truncation never edits a caller's token list."""
        return self.tokenize(text) if isinstance(text, str) else list(text)

    def _right_cut_index(self) -> int:
        """Pop just before the end token (or the last token if none)."""
        return -int(self._token_end is not None) - 1

    def _cut_index(self, truncate_from: str | int) -> int:
        if truncate_from == "right":
            return self._right_cut_index()
        if truncate_from == "left":
            return int(self._token_start is not None)
        return truncate_from

    def _tokenize(self, text: str) -> list[str]:
        raise NotImplementedError


class Tokenizer(TokenizerBase):
    """BERT tokenizer: `encode(first, second, maxlen)` -> ids and segments.

    `token_dict` is a `{token: id}` dict or a path to `vocab.txt`.
    `do_lower_case` is False by default, as in bert4keras: pass True for
    the uncased Chinese checkpoints (BERT, BERT-wwm, RoBERTa-wwm-ext).
    `word_maxlen` (200 under bert4keras rules, 100 under Hugging Face's):
    longer words are unknown. `pre_tokenize` (e.g. `jieba.lcut`) proposes
    words first; a word found in the vocabulary is kept whole, any other
    goes through WordPiece. `token_translate` renames tokens after
    tokenizing (bert4keras option). `rules`: 'bert4keras' or 'huggingface'
    (see the module docstring).
    """

    def __init__(
        self,
        token_dict: dict[str, int] | str | os.PathLike,
        do_lower_case: bool = False,
        word_maxlen: int | None = None,
        token_start: str | None = "[CLS]",
        token_end: str | None = "[SEP]",
        pre_tokenize: Callable[[str], Iterable[str]] | None = None,
        token_translate: dict[str, str] | None = None,
        rules: str = "bert4keras",
    ):
        if rules not in RULES:
            raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
        if not isinstance(token_dict, dict):
            token_dict = load_vocab(os.fspath(token_dict))
        super().__init__(
            token_dict, token_start, token_end, pre_tokenize, token_translate
        )
        self._do_lower_case = do_lower_case
        self._rules = rules
        self._word_maxlen = word_maxlen or _WORD_MAXLEN[rules]

    @property
    def rules(self) -> str:
        return self._rules

    def decode(
        self, ids: Iterable[int], tokens: list[str] | None = None
    ) -> str:
        """Readable text: Chinese unspaced, Latin words spaced, `##` joined.

        Special tokens (`[CLS]`, `[PAD]`, ...) are dropped. Follows the
        bert4keras rule, so scores match published bert4keras results.
        """
        tokens = tokens or self.ids_to_tokens(ids)
        tokens = [token for token in tokens if not self._is_special(token)]
        text = ""
        for i, token in enumerate(tokens):
            if token[:2] == "##":
                text += token[2:]
            elif len(token) == 1 and is_cjk_character(token):
                text += token
            elif len(token) == 1 and is_punctuation(token):
                text += token + " "
            elif i > 0 and is_cjk_character(text[-1]):
                text += token
            else:
                text += " " + token
        text = re.sub(" +", " ", text)
        text = re.sub("' (re|m|s|t|ve|d|ll) ", r"'\1 ", text)
        text = _NO_SPACE_AFTER.sub(r"\1", text)
        text = re.sub(r"(\d\.) (\d)", r"\1\2", text)
        return text.strip()

    def rematch(self, text: str, tokens: list[str]) -> list[list[int]]:
        """For each token, the indices of the characters of `text` it covers.

        Special tokens (including `[UNK]`) map to `[]`. Under bert4keras
        rules the text is lower-cased as a whole first, as bert4keras does:
        where that changes its length (`İ` becomes two characters) later
        indices count characters of the lower-cased text.
        """
        if self._do_lower_case and self._rules == "bert4keras":
            text = text.lower()
        normalized, char_mapping = "", []
        for i, ch in enumerate(text):
            if self._do_lower_case:
                ch = lowercase(ch, self._rules)
            ch = "".join(c for c in ch if not is_deleted(c, self._rules))
            normalized += ch
            char_mapping.extend([i] * len(ch))
        token_mapping, offset = [], 0
        for token in tokens:
            if self._is_special(token):
                token_mapping.append([])
                continue
            token = stem(token)
            start = normalized.index(token, offset)
            end = start + len(token)
            token_mapping.append(char_mapping[start:end])
            offset = end
        return token_mapping

    @staticmethod
    def stem(token: str) -> str:
        """The token without its `##` prefix (bert4keras name)."""
        return stem(token)

    @staticmethod
    def _is_special(token: str) -> bool:
        return bool(token) and token[0] == "[" and token[-1] == "]"

    def _tokenize(self, text: str) -> list[str]:
        if self._do_lower_case:
            text = lowercase(text, self._rules)
        if self._pre_tokenize is None:
            return self._word_pieces(text)
        tokens = []
        for word in self._pre_tokenize(text):
            if word in self._token_dict:
                tokens.append(word)
            else:
                tokens.extend(self._word_pieces(word))
        return tokens

    def _word_pieces(self, text: str) -> list[str]:
        tokens = []
        for word in split_words(text, self._rules):
            tokens.extend(self._word_piece_tokenize(word))
        return tokens

    def _word_piece_tokenize(self, word: str) -> list[str]:
        """Greedy longest-match; a word that cannot be covered is unknown."""
        if len(word) > self._word_maxlen:
            return [self._unknown(word)]
        tokens, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self._token_dict:
                    break
                end -= 1
            if end == start:
                return [self._unknown(word)]
            tokens.append(sub)
            start = end
        return tokens

    def _unknown(self, word: str) -> str:
        """bert4keras keeps the word (its id is `[UNK]`'s); HF says [UNK]."""
        return word if self._rules == "bert4keras" else self._token_unk
