"""bert4keras 0.11's API on Keras 3, over this toolkit's models and data.

A bert4keras UniLM seq2seq script runs after one mechanical rewrite of its
imports (`from bert4keras.X import ...` -> `from compat.X import ...`) and
of what Keras 3 itself forces (whole models saved as `*.keras`, weights
files named `*.weights.h5`, `fit` for `fit_generator`): the one-line `sed`
in docs/porting.md.

Modules mirror bert4keras's: `compat.backend` (`keras`, `K`),
`compat.layers` (`Loss`), `compat.models` (`build_transformer_model`),
`compat.tokenizers`, `compat.optimizers`, `compat.snippets`. Parts of
bert4keras that are not provided raise `UnsupportedError` naming the
Keras 3 way; docs/porting.md has the whole mapping.
"""

from compat._unsupported import UnsupportedError

__all__ = ["UnsupportedError"]
