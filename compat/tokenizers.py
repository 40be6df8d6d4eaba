"""bert4keras.tokenizers on Keras 3: `Tokenizer`, `SpTokenizer`,
`TokenizerBase`, `load_vocab`, `save_vocab`.

`data.Tokenizer` gives bert4keras 0.11's tokens and ids on every input;
this subclass adds the static helpers scripts call on the class
(`Tokenizer._is_cjk_character`, ...) and the `max_length` spelling of
bert4keras versions before 0.8.
"""

from data import tokenizer as _tokenizer
from data.sentencepiece import SpTokenizer
from data.tokenizer import TokenizerBase
from data.vocab import is_bert_control
from data.vocab import is_cjk_character
from data.vocab import is_punctuation
from data.vocab import is_space
from data.vocab import load_vocab
from data.vocab import save_vocab
from data.vocab import stem

__all__ = [
    "SpTokenizer",
    "Tokenizer",
    "TokenizerBase",
    "load_vocab",
    "save_vocab",
]


class Tokenizer(_tokenizer.Tokenizer):
    """bert4keras's `Tokenizer(token_dict, do_lower_case=False, ...)`."""

    stem = staticmethod(stem)
    _is_space = staticmethod(is_space)
    _is_punctuation = staticmethod(is_punctuation)
    _is_cjk_character = staticmethod(is_cjk_character)
    _is_control = staticmethod(is_bert_control)

    @staticmethod
    def _cjk_punctuation():
        return _tokenizer.CJK_PUNCTUATION

    @staticmethod
    def _is_redundant(token):
        """True for tokens `load_vocab(simplified=True)` drops."""
        return len(token) > 1 and any(
            is_cjk_character(ch) or is_punctuation(ch) for ch in stem(token)
        )

    def tokenize(self, text, maxlen=None, max_length=None):
        return super().tokenize(text, _maxlen(maxlen, max_length))

    def encode(
        self,
        first_text,
        second_text=None,
        maxlen=None,
        pattern="S*E*E",
        truncate_from="right",
        max_length=None,
    ):
        return super().encode(
            first_text,
            second_text,
            _maxlen(maxlen, max_length),
            pattern,
            truncate_from,
        )


def _maxlen(maxlen, max_length):
    """`max_length` is what bert4keras called `maxlen` before 0.8."""
    if maxlen is not None and max_length is not None:
        raise TypeError("pass maxlen or max_length, not both")
    return maxlen if max_length is None else max_length
