"""T5 v1.1 and mT5 as an encoder-decoder on Keras 3.

`build_t5_model(config_path, checkpoint_path)` returns a `T5Model`, a
functional `keras.Model` from `[encoder_token_ids, decoder_token_ids]` to
the next-token probabilities (or logits) at every decoder position; the
decoder reads the target shifted right behind `decoder_start_token_id`
(0, the padding id, as in T5). As with `models.bert`, the network is
written once, in `T5Network`: the functional model traces its `__call__`,
training strategies call it on real tensors with their own decoder token
embeddings, and the decoders run the same blocks one token at a time:
`build_cache` encodes the sources once and projects every decoder layer's
cross-attention keys and values once; `call_with_cache` then feeds one
token per row on a self-attention cache, with `Seq2SeqDecoder`'s
interface (`models/t5_decoding.py`).

Layer names follow bert4keras's T5 (`Embedding-Token`,
`Encoder-Transformer-0-MultiHeadSelfAttention`, `Decoder-Output-LM`...).
"""

import dataclasses
import json
import pathlib
from typing import NamedTuple

import keras
from keras import ops

from models import layers as L
from models import t5_layers as T
from models.config import resolve_config

# Hugging Face `model_type`s read as this family.
MODEL_TYPES = ("t5", "mt5")


@dataclasses.dataclass
class T5Config:
    """Hyper-parameters of a T5 v1.1 / mT5 model, Hugging Face's names.

    `tie_word_embeddings` False (T5 v1.1, mT5): the output layer has its
    own weights; True (T5 v1.0): it is the shared embedding, applied to
    the hidden states scaled by d_model^-0.5. `model_type` 'mt5' is
    always untied.
    """

    vocab_size: int = 250112
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int | None = None
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    model_type: str = "mt5"
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0

    def __post_init__(self):
        if self.model_type == "mt5":
            # Every mT5 has its own output layer; transformers 5 writes
            # `tie_word_embeddings: true` into the configs it saves.
            self.tie_word_embeddings = False
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.activation not in T.T5_ACTIVATIONS:
            raise ValueError(
                f"unknown feed_forward_proj {self.feed_forward_proj!r}; "
                "expected '[gated-]gelu' or '[gated-]relu'"
            )

    @property
    def hidden_size(self):
        """BERT's name for the width, which training strategies read."""
        return self.d_model

    @property
    def gated(self):
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self):
        return self.feed_forward_proj.removeprefix("gated-")

    @classmethod
    def from_dict(cls, values):
        """Keep the known fields, ignore the rest (architectures...).

        transformers 5 saves every T5 config with `tie_word_embeddings:
        true` and says in `scale_decoder_outputs` whether the output layer
        is the shared embedding scaled (T5 v1.0): that key wins."""
        names = {field.name for field in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        if "scale_decoder_outputs" in values:
            kept["tie_word_embeddings"] = bool(values["scale_decoder_outputs"])
        return cls(**kept)

    @classmethod
    def from_json(cls, path):
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"model config not found: {path}")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{error.lineno}: not valid JSON ({error.msg})"
            ) from None
        return cls.from_dict(values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path):
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        pathlib.Path(path).write_text(text + "\n", encoding="utf-8")


def resolve_t5_config(config_path, overrides):
    """A T5Config from a path, a dict, a T5Config or None + overrides."""
    return resolve_config(config_path, overrides, T5Config)


class T5Cache(NamedTuple):
    """What a decoding step reads: per source, every decoder layer's
    cross-attention keys and values (computed once); per row (beam or
    sample, source-major), every layer's self-attention keys and values
    of the positions decoded so far (slot 0: the start token)."""

    source: object  # (sources, layers, 2, heads, source_len, d_kv)
    source_bias: object  # (sources, 1, 1, source_len) float32
    outputs: object  # (rows, layers, 2, heads, slots, d_kv)

    def reorder(self, rows):
        """Row r of the result continues row `rows[r]` (same source)."""
        return self._replace(outputs=ops.take(self.outputs, rows, axis=0))


def encoder_name(index):
    return f"Encoder-Transformer-{index}"


def decoder_name(index):
    return f"Decoder-Transformer-{index}"


class T5Network:
    """The layers of one T5 and the functions that wire them."""

    def __init__(self, layers, config, with_lm):
        self.layers = layers
        self.config = config
        self.with_lm = with_lm

    @classmethod
    def create(cls, config, with_lm, dtype=None):
        previous = keras.config.dtype_policy()
        if dtype is not None:
            keras.config.set_dtype_policy(dtype)
        try:
            layers = _layers(config)
        finally:
            keras.config.set_dtype_policy(previous)
        return cls(layers, config, with_lm)

    def __getitem__(self, name):
        return self.layers[name]

    def embed(self, token_ids, token_embeddings=None, training=False):
        if token_embeddings is None:
            token_embeddings = self["Embedding-Token"](token_ids)
        return self["Embedding-Dropout"](token_embeddings, training=training)

    def residual(self, name, x, sublayer, training):
        """x + dropout(sublayer(RMSNorm(x))): T5's pre-norm sub-layer."""
        y = sublayer(self[f"{name}-Norm"](x))
        return x + self[f"{name}-Dropout"](y, training=training)

    def encoder_block(self, index, x, bias, training=False):
        name = f"{encoder_name(index)}-MultiHeadSelfAttention"
        x = self.residual(
            name,
            x,
            lambda h: self[name](h, bias=bias, training=training),
            training,
        )
        return self.feed_forward(
            f"{encoder_name(index)}-FeedForward", x, training
        )

    def feed_forward(self, name, x, training):
        return self.residual(
            name, x, lambda h: self[name](h, training=training), training
        )

    def encode(self, token_ids, token_embeddings=None, training=False):
        """The encoder's output (batch, length, d_model) for `token_ids`."""
        x = self.embed(token_ids, token_embeddings, training)
        bias = self["Encoder-Embedding-Relative-Position"](x, x)
        bias = bias + T.padding_bias(token_ids)
        for index in range(self.config.num_layers):
            x = self.encoder_block(index, x, bias, training)
        x = self["Encoder-Output-Norm"](x)
        return self["Encoder-Output-Dropout"](x, training=training)

    def decoder_block(self, index, x, self_bias, cross, training=False):
        """One decoder block; `cross(attention, h)` attends to the source
        (the encoder's output, or cached keys and values)."""
        name = f"{decoder_name(index)}-MultiHeadSelfAttention"
        x = self.residual(
            name,
            x,
            lambda h: self[name](h, bias=self_bias, training=training),
            training,
        )
        name = f"{decoder_name(index)}-MultiHeadCrossAttention"
        x = self.residual(name, x, lambda h: cross(self[name], h), training)
        return self.feed_forward(
            f"{decoder_name(index)}-FeedForward", x, training
        )

    def decode(
        self,
        token_ids,
        encoded,
        source_ids,
        token_embeddings=None,
        training=False,
    ):
        """The decoder's output (batch, length, d_model): `token_ids` (the
        target shifted right) attend causally to themselves and to
        `encoded`, the encoder's output for `source_ids`."""
        x = self.embed(token_ids, token_embeddings, training)
        self_bias = self["Decoder-Embedding-Relative-Position"](x, x)
        source_bias = T.padding_bias(source_ids)

        def cross(attention, h):
            return attention(
                h, memory=encoded, bias=source_bias, training=training
            )

        for index in range(self.config.num_decoder_layers):
            x = self.decoder_block(index, x, self_bias, cross, training)
        x = self["Decoder-Output-Norm"](x)
        return self["Decoder-Output-Dropout"](x, training=training)

    def lm_logits(self, hidden):
        """Logits of the next token; the shared embedding when tied."""
        if self.config.tie_word_embeddings:
            hidden = hidden * self.config.d_model**-0.5
            return self["Embedding-Token"](hidden, mode="dense")
        return self["Decoder-Output-LM"](hidden)

    def __call__(
        self,
        source_ids,
        target_ids,
        training=False,
        output=None,
        target_embeddings=None,
    ):
        """The whole model: `output` 'hidden', 'logits' or 'probas' (by
        default what it was built to return). `target_embeddings` replaces
        the decoder's token lookup (training strategies)."""
        output = output or self.default_output
        encoded = self.encode(source_ids, training=training)
        x = self.decode(
            target_ids, encoded, source_ids, target_embeddings, training
        )
        if output == "hidden":
            return x
        logits = ops.cast(self.lm_logits(x), "float32")
        if output == "logits":
            return logits
        return self["LM-Activation"](logits)

    @property
    def default_output(self):
        return "logits" if self.with_lm == "linear" else "probas"

    # Decoding with a key/value cache ----------------------------------------

    def build_cache(self, token_ids, lengths, rows_per_source, slots):
        """Encode sources once; the cache that decoding steps attend to.

        `token_ids` (sources, length), padded with 0; `lengths` is unused
        (padding is read from the ids) and kept for `Seq2SeqDecoder`'s
        interface. Each source gets `rows_per_source` rows with `slots`
        outputs each. Projects every decoder layer's cross-attention keys
        and values once, then runs the start token (position 0); returns
        the logits of the first output per source and the `T5Cache`.
        """
        del lengths
        encoded = self.encode(token_ids)
        source = []
        for index in range(self.config.num_decoder_layers):
            attention = self[f"{decoder_name(index)}-MultiHeadCrossAttention"]
            source.append(ops.stack(attention.project_kv(encoded), axis=1))
        attention = self[f"{decoder_name(0)}-MultiHeadSelfAttention"]
        sources = token_ids.shape[0]
        outputs = ops.zeros(
            (
                sources * rows_per_source,
                self.config.num_decoder_layers,
                2,
                attention.heads,
                slots + 1,
                attention.head_size,
            ),
            dtype=attention.compute_dtype,
        )
        cache = T5Cache(
            ops.stack(source, axis=1), T.padding_bias(token_ids), outputs
        )
        start = ops.full(
            (sources * rows_per_source,),
            self.config.decoder_start_token_id,
            "int32",
        )
        logits, _, cache = self.step_at(start, cache, 0)
        return logits[::rows_per_source], cache

    def call_with_cache(self, token_ids, cache, index):
        """Output `index` (0 is the first token after the start token) of
        every row, on the cache: returns the logits of the next token
        (rows, vocab), the hidden states (rows, d_model) and the cache
        with this token's keys and values in place."""
        return self.step_at(token_ids, cache, index + 1)

    def step_at(self, token_ids, cache, position):
        """One token per row at decoder `position`, through every block."""
        x = self.embed(token_ids[:, None])
        slots = cache.outputs.shape[4]
        keys = ops.arange(slots)
        position = ops.convert_to_tensor(position, "int32")
        relative = self["Decoder-Embedding-Relative-Position"]
        # The causal mask hides the slots after `position` (not yet filled).
        self_bias = relative.between(position[None], keys)
        here = ops.equal(keys, position)[None, None, None, :, None]
        written = []
        for index in range(self.config.num_decoder_layers):
            name = f"{decoder_name(index)}-MultiHeadSelfAttention"
            kv = cache.outputs[:, index]

            def attend(h, name=name, kv=kv):
                attention = self[name]
                q = attention.split_heads(attention.q_dense(h))
                k, v = attention.project_kv(h)
                new = ops.stack([k, v], axis=1)
                kv = ops.where(here, new, kv)
                written.append(kv)
                return attention.attend(q, kv[:, 0], kv[:, 1], self_bias)

            def cross(h, index=index):
                attention = self[
                    f"{decoder_name(index)}-MultiHeadCrossAttention"
                ]
                q = attention.split_heads(attention.q_dense(h))
                k, v = cache.source[:, index, 0], cache.source[:, index, 1]
                return attention.attend_shared(q, k, v, cache.source_bias)

            x = self.residual(name, x, attend, False)
            name = f"{decoder_name(index)}-MultiHeadCrossAttention"
            x = self.residual(name, x, cross, False)
            x = self.feed_forward(
                f"{decoder_name(index)}-FeedForward", x, False
            )
        x = self["Decoder-Output-Norm"](x)
        cache = cache._replace(outputs=ops.stack(written, axis=1))
        return self.lm_logits(x)[:, 0], x[:, 0], cache


def _layers(config):
    """Every layer of the network, keyed by its bert4keras name."""
    factor = config.initializer_factor
    init = keras.initializers.RandomNormal(stddev=factor)
    dense = keras.initializers.RandomNormal(
        stddev=factor * config.d_model**-0.5
    )
    eps, rate = config.layer_norm_epsilon, config.dropout_rate
    made = [
        L.Embedding(
            config.vocab_size,
            config.d_model,
            embeddings_initializer=init,
            name="Embedding-Token",
        ),
        keras.layers.Dropout(rate, name="Embedding-Dropout"),
    ]
    for stack, layers in (
        ("Encoder", config.num_layers),
        ("Decoder", config.num_decoder_layers),
    ):
        made.append(
            T.RelativePositionBias(
                config.num_heads,
                config.relative_attention_num_buckets,
                config.relative_attention_max_distance,
                bidirectional=stack == "Encoder",
                initializer=init,
                name=f"{stack}-Embedding-Relative-Position",
            )
        )
        for index in range(layers):
            made += _block_layers(config, stack, index, dense)
        made += [
            keras.layers.RMSNormalization(
                epsilon=eps, name=f"{stack}-Output-Norm"
            ),
            keras.layers.Dropout(rate, name=f"{stack}-Output-Dropout"),
        ]
    if not config.tie_word_embeddings:
        made.append(
            keras.layers.Dense(
                config.vocab_size,
                use_bias=False,
                kernel_initializer=init,
                name="Decoder-Output-LM",
            )
        )
    made.append(
        keras.layers.Activation(
            "softmax", dtype="float32", name="LM-Activation"
        )
    )
    for layer in made:
        # Built here: their calls take several tensors, whose shapes
        # Keras's automatic build would pass under the calls' names.
        if isinstance(
            layer, (T.T5Attention, T.GatedFeedForward, T.RelativePositionBias)
        ):
            layer.build((None, None, config.d_model))
    return {layer.name: layer for layer in made}


def _block_layers(config, stack, index, init):
    """A block's sub-layers, each with its norm and dropout."""
    prefix = f"{stack}-Transformer-{index}"
    kinds = ["MultiHeadSelfAttention"]
    if stack == "Decoder":
        kinds.append("MultiHeadCrossAttention")
    made = []
    for kind in kinds:
        made.append(
            T.T5Attention(
                config.num_heads,
                config.d_kv,
                config.dropout_rate,
                kernel_initializer=init,
                name=f"{prefix}-{kind}",
            )
        )
        made += _norm_and_dropout(config, f"{prefix}-{kind}")
    made.append(
        T.GatedFeedForward(
            config.d_ff,
            T.T5_ACTIVATIONS[config.activation],
            config.gated,
            config.dropout_rate,
            kernel_initializer=init,
            name=f"{prefix}-FeedForward",
        )
    )
    made += _norm_and_dropout(config, f"{prefix}-FeedForward")
    return made


def _norm_and_dropout(config, name):
    return [
        keras.layers.RMSNormalization(
            epsilon=config.layer_norm_epsilon, name=f"{name}-Norm"
        ),
        keras.layers.Dropout(config.dropout_rate, name=f"{name}-Dropout"),
    ]


@L.serializable
class T5Model(keras.Model):
    """A T5 v1.1 / mT5 encoder-decoder as one Keras object.

    A functional model from `[encoder_token_ids, decoder_token_ids]` to
    the next-token probabilities ('softmax', the default) or logits
    ('linear') at every decoder position. `get_config` echoes every
    argument, so it saves to `.keras` and loads back whole.

    Attributes: `t5_network` (the `T5Network`), `t5_config`, `with_lm`,
    `keep_tokens` (the kept vocabulary rows, or None).
    """

    def __init__(
        self,
        t5_config,
        with_lm="softmax",
        keep_tokens=None,
        dtype=None,
        **kwargs,
    ):
        config = resolve_t5_config(t5_config, {})
        if with_lm not in ("softmax", "linear"):
            raise ValueError(
                f"with_lm must be 'softmax' or 'linear', got {with_lm!r}"
            )
        if keep_tokens is not None:
            keep_tokens = [int(token) for token in keep_tokens]
            if len(keep_tokens) != config.vocab_size:
                raise ValueError(
                    f"{len(keep_tokens)} keep_tokens for a vocab_size of "
                    f"{config.vocab_size}"
                )
        if isinstance(dtype, keras.DTypePolicy):
            dtype = dtype.name
        network = T5Network.create(config, with_lm, dtype)
        source = keras.Input((None,), dtype="int32", name="Encoder-Input-Token")
        target = keras.Input((None,), dtype="int32", name="Decoder-Input-Token")
        kwargs.setdefault("name", config.model_type)
        super().__init__([source, target], network(source, target), **kwargs)
        self.t5_network = network
        self.t5_config = config
        self.with_lm = with_lm
        self.keep_tokens = keep_tokens
        self.dtype_name = dtype

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "t5_config": self.t5_config.to_dict(),
            "with_lm": self.with_lm,
            "keep_tokens": self.keep_tokens,
            "dtype": self.dtype_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_t5_model(
    config_path=None,
    checkpoint_path=None,
    with_lm="softmax",
    keep_tokens=None,
    dtype=None,
    name=None,
    **overrides,
):
    """Build a T5 v1.1 / mT5 encoder-decoder, optionally loading weights.

    Args:
        config_path: Hugging Face `config.json`, a model directory, a dict
            or a `T5Config`; None uses mT5-small's shape.
        checkpoint_path: Hugging Face safetensors / `pytorch_model.bin`, a
            Google T5 / mT5 TF checkpoint, or Keras `.weights.h5`.
        with_lm: 'softmax' (probabilities) or 'linear' (logits).
        keep_tokens: vocabulary rows to keep (bert4keras's); vocab_size
            becomes `len(keep_tokens)`.
        dtype: a Keras dtype policy name such as 'mixed_bfloat16'.
        name: the model's name (default the config's model_type).
        **overrides: config fields to override (e.g. `num_layers=2`).
    """
    config = resolve_t5_config(config_path, overrides)
    if keep_tokens is not None:
        config = dataclasses.replace(config, vocab_size=len(keep_tokens))
    model = T5Model(
        config,
        with_lm,
        keep_tokens=keep_tokens,
        dtype=dtype,
        name=name or config.model_type,
    )
    if checkpoint_path is not None:
        from weights.t5_mapping import load_t5_checkpoint

        load_t5_checkpoint(model, checkpoint_path, keep_tokens=keep_tokens)
    return model
