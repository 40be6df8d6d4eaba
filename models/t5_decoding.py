"""Decoding titles with a T5 v1.1 / mT5 encoder-decoder.

`T5Decoder` is `Seq2SeqDecoder` on a `T5Model`: the same searches, batches,
compiled steps and options, on `T5Network.build_cache` (the encoder run
once per source, every decoder layer's cross-attention keys and values
projected once) and `T5Network.call_with_cache` (one token per row on the
self-attention cache). Sources are the encoder's token ids; outputs do not
include the decoder's start token, and include `end_id` when they ended.

`reference=True` decodes with `T5RecomputeDecoder`, bert4keras's
`AutoTitle` for T5: the whole decoder rerun on [start + output so far] at
every step. It is what the cached path is tested against.
"""

import types
import warnings

import numpy as np
from keras import ops

from models.backend import free_device_memory
from models.decoding import AutoRegressiveDecoder
from models.decoding import Seq2SeqDecoder
from models.decoding_batches import sources_per_batch
from models.search import LOG_EPSILON

# The longest source a T5Decoder takes by default (mT5's pre-training
# inputs were 1024 tokens long; relative positions set no hard limit).
MAX_SOURCE_LEN = 1024


class T5RecomputeDecoder(AutoRegressiveDecoder):
    """bert4keras's T5 `AutoTitle`: the decoder rerun every step.

    `inputs` are `[source_ids, segment_ids]` as `Seq2SeqDecoder` passes
    them (segments unused).
    """

    def __init__(self, model, end_id, maxlen, minlen=1):
        super().__init__(None, end_id, maxlen, minlen)
        self.model = model
        self.start_id = model.t5_config.decoder_start_token_id

    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        source_ids = np.asarray(inputs[0], dtype="int32")
        start = np.full((len(output_ids), 1), self.start_id, dtype="int32")
        target_ids = np.concatenate([start, output_ids], 1).astype("int32")
        with warnings.catch_warnings():
            # The first step's self-attention has one key: softmax is 1.
            warnings.filterwarnings("ignore", "You are using a softmax")
            logits = self.model.t5_network(
                source_ids, target_ids, output="logits"
            )
        return ops.convert_to_numpy(logits[:, -1])


class T5Decoder(Seq2SeqDecoder):
    """`Seq2SeqDecoder` for a model from `models.t5.build_t5_model`.

    `max_source_len` bounds the sources (`check_sources`, and where
    `generate_batch` cuts texts); the other arguments are
    `Seq2SeqDecoder`'s. `end_id` defaults to the config's `eos_token_id`.
    """

    def __init__(
        self,
        model,
        end_id=None,
        maxlen=32,
        max_source_len=MAX_SOURCE_LEN,
        **kwargs,
    ):
        self.max_source_len = max_source_len
        network = self.find_network(model)
        if end_id is None:
            end_id = network.config.eos_token_id
        super().__init__(model, end_id, maxlen, **kwargs)

    @staticmethod
    def find_network(model):
        network = getattr(model, "t5_network", None)
        if network is None:
            raise ValueError(
                "T5Decoder needs a model from models.t5.build_t5_model"
            )
        return network

    @staticmethod
    def reference_decoder(model, end_id, maxlen, minlen):
        return T5RecomputeDecoder(model, end_id, maxlen, minlen)

    @property
    def max_positions(self):
        """Source and outputs each have their own positions; this is the
        bound `check_sources` and `pack` read: a source of at most
        `max_source_len` tokens."""
        return self.max_source_len + self.maxlen

    def sources_per_batch(self, count, rows_per_source):
        """As `Seq2SeqDecoder`'s, sized from the cache of both stacks."""
        if self.batch_size != "auto":
            return self.batch_size
        if rows_per_source not in self._auto_sizes:
            config = self.network.config
            attention = self.network[
                "Decoder-Transformer-0-MultiHeadSelfAttention"
            ]
            shape = types.SimpleNamespace(
                hidden_size=max(config.d_model, config.num_heads * config.d_kv),
                num_hidden_layers=config.num_layers + config.num_decoder_layers,
                num_attention_heads=config.num_heads,
                intermediate_size=2 * config.d_ff,
                vocab_size=config.vocab_size,
            )
            dtype_bytes = 2 if "16" in attention.compute_dtype else 4
            self._auto_sizes[rows_per_source] = sources_per_batch(
                shape,
                rows_per_source,
                self.max_source_len,
                self.maxlen + 1,
                dtype_bytes,
                free_device_memory(),
            )
        size = self._auto_sizes[rows_per_source]
        return min(size, 1 << (count - 1).bit_length())

    def head(self, logits, k):
        probas = self.network["LM-Activation"](logits)
        if k is None:
            return probas
        return ops.top_k(ops.log(probas + LOG_EPSILON), k)
