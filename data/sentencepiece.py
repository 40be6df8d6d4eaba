"""SentencePiece tokenizer (T5, mT5) with bert4keras 0.11's `SpTokenizer` API.

`SpTokenizer(sp_model_path, token_start=None, token_end="</s>")` is how
bert4keras's mT5 examples build it: no start token, the end-of-sequence
piece closes every text. `encode`, `tokenize`, the `_token_*_id`
attributes and `decode` give bert4keras's ids and text, so a ported mT5
script sees the same ids; the tokens themselves are the `sentencepiece`
package's (`SentencePieceProcessor.encode_as_pieces`).
"""

import os
from collections.abc import Callable
from collections.abc import Iterable

from data.tokenizer import TokenizerBase


def _processor(path: str | os.PathLike):
    """The loaded model; a missing or unreadable file fails in one line."""
    import sentencepiece

    path = os.fspath(path)
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(path)
    except (OSError, RuntimeError) as error:
        raise ValueError(
            f"{path}: not a SentencePiece model ({str(error).strip()})"
        ) from None
    return processor


class SpTokenizer(TokenizerBase):
    """A SentencePiece model as a tokenizer: `encode(text, maxlen=...)`.

    The vocabulary is the model's pieces in id order; the pad and unknown
    tokens are the model's own (`<pad>`, `<unk>` for T5). A token the
    model does not know maps to the unknown id, as `piece_to_id` does.
    `pre_tokenize` and `token_translate` behave as in `Tokenizer`.
    """

    def __init__(
        self,
        sp_model_path: str | os.PathLike,
        token_start: str | None = "[CLS]",
        token_end: str | None = "[SEP]",
        pre_tokenize: Callable[[str], Iterable[str]] | None = None,
        token_translate: dict[str, str] | None = None,
    ):
        self.sp_model = _processor(sp_model_path)
        size = self.sp_model.get_piece_size()
        pieces = {self.sp_model.id_to_piece(i): i for i in range(size)}
        super().__init__(
            pieces,
            token_start,
            token_end,
            pre_tokenize,
            token_translate,
            token_pad=self._piece_or_none(self.sp_model.pad_id()),
            token_unk=self._piece_or_none(self.sp_model.unk_id()),
        )
        # bert4keras looks every special token up with `piece_to_id`, so
        # a token the model lacks (`[MASK]`, `[CLS]`) gets the unknown id.
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, f"_token_{name}")
            if token is not None:
                setattr(self, f"_token_{name}_id", self.token_to_id(token))

    def _piece_or_none(self, i: int) -> str | None:
        """A model trained without a pad piece reports id -1."""
        return self.sp_model.id_to_piece(i) if i >= 0 else None

    def id_to_token(self, i: int) -> str:
        """An id past the vocabulary (a padded embedding row) reads as ''."""
        i = int(i)
        return self.sp_model.id_to_piece(i) if i < self._vocab_size else ""

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; control pieces (`</s>`, `<pad>`) write nothing."""
        tokens = [
            self._token_translate_inv.get(token) or token
            for token in self.ids_to_tokens(ids)
        ]
        return self.sp_model.decode_pieces(tokens)

    def _tokenize(self, text: str) -> list[str]:
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        return self.sp_model.encode_as_pieces(text)

    def _is_special(self, i: int) -> bool:
        """Control, unknown and unused pieces (bert4keras's rule)."""
        return (
            self.sp_model.is_control(i)
            or self.sp_model.is_unknown(i)
            or self.sp_model.is_unused(i)
        )

    def _is_decodable(self, i: int) -> bool:
        return i < self._vocab_size and not self._is_special(i)
