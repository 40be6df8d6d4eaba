"""WordPiece vocabulary files: reading, simplifying and writing.

`load_vocab` keeps the contract of bert4keras 0.11 so that ported scripts
only change their imports; `simplified=True` returns the reduced vocabulary
and the `keep_tokens` rows to slice out of a checkpoint's embeddings.

The character classes live here (not in `tokenizer.py`) because the
simplification rule needs them and the tokenizer imports this module.
"""

import os
import unicodedata

# BERT's special tokens, defined here once. A vocabulary simplified for
# seq2seq keeps the first four, as bert4keras's examples do
# (`load_vocab(..., simplified=True, startswith=SEQ2SEQ_TOKENS)`); masked-LM
# pretraining keeps [MASK] as well.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SEQ2SEQ_TOKENS = SPECIAL_TOKENS[:4]
# Every vocabulary (whole or simplified) starts with [PAD], so padding is
# token id 0 everywhere: in batches, in attention masks, in the losses.
PAD_ID = 0

# Ranges of CJK Unified Ideographs as in Google BERT's `_is_chinese_char`;
# Japanese kana and Korean hangul are deliberately not in it.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_cjk_character(ch: str) -> bool:
    """True for a CJK ideograph, which BERT always splits off on its own."""
    code = ord(ch)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """True for ASCII symbols and Unicode `P*` characters (BERT's rule).

    ASCII `$`, `+`, `^` etc. are not `P*` in Unicode, but BERT splits on
    them too, so the ASCII ranges are listed explicitly.
    """
    code = ord(ch)
    return (
        33 <= code <= 47
        or 58 <= code <= 64
        or 91 <= code <= 96
        or 123 <= code <= 126
        or unicodedata.category(ch).startswith("P")
    )


def is_space(ch: str) -> bool:
    """True for characters BERT turns into a word boundary."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """Hugging Face's rule: all `C*` except tab and newlines are deleted.

    That includes private-use (`Co`), surrogate (`Cs`) and unassigned
    (`Cn`) characters, which Google's BERT and bert4keras keep.
    """
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_bert_control(ch: str) -> bool:
    """Google BERT's and bert4keras's rule: only `Cc` and `Cf` are deleted.

    Tab and newlines are `Cc` too, but the tokenizer turns them into spaces
    before it looks for control characters.
    """
    return unicodedata.category(ch) in ("Cc", "Cf")


def stem(token: str) -> str:
    """The token without its `##` continuation prefix."""
    return token[2:] if token[:2] == "##" else token


def load_vocab(
    dict_path: str,
    encoding: str = "utf-8",
    simplified: bool = False,
    startswith: list[str] | None = None,
):
    """Read a BERT `vocab.txt` into a `{token: id}` dict.

    The id is the line index (what the checkpoint's embedding rows use); a
    line's token is its first whitespace-separated field, as in bert4keras.
    With `simplified=True` returns `(token_dict, keep_tokens)`: the tokens
    in `startswith` first, then every token whose stem has no CJK character
    or punctuation (those can never be produced once text is split around
    such characters); `keep_tokens[new_id]` is the old id.
    """
    token_dict = _read_tokens(dict_path, encoding)
    if simplified:
        return simplify_vocab(token_dict, startswith)
    return token_dict


def _read_tokens(dict_path: str, encoding: str) -> dict[str, int]:
    """Token per line; a duplicate would shift every later id, so reject it."""
    if not os.path.isfile(dict_path):
        raise FileNotFoundError(f"vocab file not found: {dict_path}")
    token_dict = {}
    with open(dict_path, encoding=encoding) as reader:
        for index, line in enumerate(reader):
            fields = line.split()
            token = fields[0] if fields else line.strip()
            if token in token_dict:
                raise ValueError(
                    f"{dict_path}:{index + 1}: duplicate token {token!r} "
                    f"(first on line {token_dict[token] + 1})"
                )
            token_dict[token] = index
    return token_dict


def simplify_vocab(
    token_dict: dict[str, int], startswith: list[str] | None = None
) -> tuple[dict[str, int], list[int]]:
    """Drop tokens the tokenizer cannot emit; see `load_vocab`."""
    new_token_dict, keep_tokens = {}, []
    for token in startswith or []:
        if token not in token_dict:
            raise KeyError(f"startswith token {token!r} is not in the vocab")
        new_token_dict[token] = len(new_token_dict)
        keep_tokens.append(token_dict[token])
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        if token not in new_token_dict and _is_emittable(token):
            new_token_dict[token] = len(new_token_dict)
            keep_tokens.append(index)
    return new_token_dict, keep_tokens


def _is_emittable(token: str) -> bool:
    """bert4keras's rule: single characters always stay (even `[`, `中`)."""
    if len(token) <= 1:
        return True
    return not any(
        is_cjk_character(ch) or is_punctuation(ch) for ch in stem(token)
    )


def save_vocab(
    dict_path: str, token_dict: dict[str, int], encoding: str = "utf-8"
) -> None:
    """Write tokens one a line in id order, e.g. a simplified vocabulary."""
    with open(dict_path, "w", encoding=encoding) as writer:
        for token, _ in sorted(token_dict.items(), key=lambda item: item[1]):
            writer.write(token + "\n")
