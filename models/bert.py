"""BERT and its UniLM seq2seq form, built the bert4keras way on Keras 3.

`build_transformer_model(config_path, checkpoint_path, application='unilm')`
returns a `BertModel`, a functional `keras.Model` taking `[token_ids,
segment_ids]` that Keras saves to `.keras` and loads back whole. The
network itself is written once, in `BertNetwork.__call__`: the functional
model is that call traced on symbolic inputs, and training strategies that
need a custom pass (TeaForN, scheduled sampling, FGM) call the same method on
real tensors with their own token embeddings. Decoders run the same blocks
one token at a time on a key/value cache (`build_cache`, `call_with_cache`,
keras-hub's shape), so a block is written once, in `BertNetwork.block`, for
every pass. Layer names follow bert4keras
(`Embedding-Token`, `Transformer-0-MultiHeadSelfAttention`, `MLM-Bias`, ...)
so that `model.get_layer(...)` in ported scripts keeps working.
"""

import dataclasses
from typing import NamedTuple

import keras
from keras import ops

from models import layers as L
from models import positions as P
from models.config import resolve_config
from models.remat import checkpointed

APPLICATIONS = ("encoder", "unilm", "lm")
MODELS = P.MODEL_TYPES
MLM_OUTPUTS = (True, "softmax", "linear")


class DecodingCache(NamedTuple):
    """Keys and values a UniLM decoding step attends to, every layer.

    keras-hub's cache is one tensor `[batch, layers, 2, length, heads,
    head_size]`; here a source's keys and values are kept once for all its
    rows (beams or samples), and heads come before length (see
    `layers.AttentionCache`). Rows are source-major.
    """

    source: object  # (sources, layers, 2, heads, source_len, head_size)
    source_bias: object  # (sources, source_len): 0, or MASK_BIAS for padding
    outputs: object  # (rows, layers, 2, heads, slots, head_size)
    starts: object  # (rows,) int32: position of each row's first output

    def layer(self, layer, index):
        """The `AttentionCache` of one layer, outputs before `index`."""
        return L.AttentionCache(
            self.source[:, layer],
            self.source_bias,
            self.outputs[:, layer],
            # A layer's nested arguments must all be tensors, also eagerly.
            ops.convert_to_tensor(index, "int32"),
        )

    def reorder(self, rows):
        """Row r of the result continues row `rows[r]`, a row of the same
        source (beams kept): a row always reads the source of its place."""
        return self._replace(outputs=ops.take(self.outputs, rows, axis=0))


class BertNetwork:
    """The layers of one BERT and the single function that wires them."""

    def __init__(self, layers, config, application, mlm):
        self.layers = layers
        self.config = config
        self.application = application
        self.mlm = mlm
        # Recompute each block's activations in the backward pass of a
        # training pass (`models.remat`): less memory, more compute.
        self.gradient_checkpointing = False

    @classmethod
    def create(cls, config, application, mlm, dtype=None):
        init = keras.initializers.TruncatedNormal(
            stddev=config.initializer_range
        )
        return cls(
            _create_layers(config, application, mlm, init, dtype),
            config,
            application,
            mlm,
        )

    @classmethod
    def from_model(cls, model):
        """Re-find the layers of a model built by `build_transformer_model`."""
        network = getattr(model, "bert_network", None)
        if network is not None:
            return network
        names = [layer.name for layer in model.layers]
        raise ValueError(
            "this model was not built by build_transformer_model "
            f"(layers: {names[:5]}...)"
        )

    def __getitem__(self, name):
        return self.layers[name]

    def embed(
        self,
        token_ids,
        segment_ids,
        token_embeddings=None,
        offset=0,
        training=False,
    ):
        """Token + segment + position embeddings, normalised.

        `token_embeddings` replaces the lookup of `token_ids` (shape
        (batch, length, hidden)); `offset` shifts the positions.
        """
        if token_embeddings is None:
            token_embeddings = self["Embedding-Token"](token_ids)
        x = token_embeddings + self["Embedding-Segment"](segment_ids)
        if "Embedding-Position" in self.layers:
            x = self["Embedding-Position"](x, offset=offset)
        x = self["Embedding-Norm"](x)
        return self["Embedding-Dropout"](x, training=training)

    def block(
        self,
        index,
        x,
        bias=None,
        training=False,
        cache=None,
        return_kv=False,
        positions=None,
    ):
        """One post-LayerNorm Transformer block: the only place one is built.

        Full pass: every position of `x` attends to every position under
        the attention `bias`. Decoding (`call_with_cache`): `x` holds one
        new token per row, which attends to an `AttentionCache` and itself,
        at `positions` (rows, 1), which RoFormer's attention encodes.
        With `return_kv` or a cache, returns `(x, (keys, values))`: the
        keys and values of `x`, which a decoder stores in its cache.
        """
        name = f"Transformer-{index}-MultiHeadSelfAttention"
        return_kv = return_kv or cache is not None
        y = self[name](
            x,
            bias,
            training=training,
            cache=cache,
            return_kv=return_kv,
            positions=positions,
        )
        y, kv = y if return_kv else (y, None)
        y = self[f"{name}-Dropout"](y, training=training)
        x = self[f"{name}-Norm"](x + y)
        name = f"Transformer-{index}-FeedForward"
        y = self[name](x)
        y = self[f"{name}-Dropout"](y, training=training)
        x = self[f"{name}-Norm"](x + y)
        return (x, kv) if return_kv else x

    def training_block(self, index, x, bias, training):
        """`block` of the full pass; checkpointed (`models.remat`) in a
        training pass when `gradient_checkpointing` is on."""
        if not (self.gradient_checkpointing and training):
            return self.block(index, x, bias, training=training)
        prefix = f"Transformer-{index}-"
        layers = [v for k, v in self.layers.items() if k.startswith(prefix)]
        block = checkpointed(
            lambda x, bias: self.block(index, x, bias, training=True), layers
        )
        return block(x, bias)

    def mlm_logits(self, hidden):
        """The MLM head up to the logits, tied to the token embeddings."""
        x = self["MLM-Norm"](self["MLM-Dense"](hidden))
        x = self["Embedding-Token"](x, mode="dense")
        return self["MLM-Bias"](x)

    def __call__(
        self,
        token_ids,
        segment_ids,
        token_embeddings=None,
        training=False,
        output=None,
    ):
        """Run the whole network.

        `output`: 'hidden', 'logits' or 'probas'; by default what the model
        was built to return.
        """
        output = output or self.default_output
        x = self.embed(
            token_ids, segment_ids, token_embeddings, training=training
        )
        bias = self["Attention-Bias"]([token_ids, segment_ids])
        for index in range(self.config.num_hidden_layers):
            x = self.training_block(index, x, bias, training)
        if output == "hidden":
            return x
        logits = self.mlm_logits(x)
        if output == "logits":
            return ops.cast(logits, "float32")
        return self["MLM-Activation"](logits)

    # Decoding with a key/value cache (keras-hub's `call_with_cache`) ------

    def build_cache(self, token_ids, lengths, rows_per_source, slots):
        """Encode sources once; the cache that decoding steps attend to.

        `token_ids` (sources, length) are segment-0 sources padded with 0,
        `lengths` their lengths. Each source gets `rows_per_source` output
        rows (beams or samples) with `slots` output positions each. Runs
        the full pass over the sources (the same blocks, keeping each
        layer's keys and values); returns the MLM logits after each
        source's last token, (sources, vocab), and the `DecodingCache`.
        """
        segment_ids = ops.zeros_like(token_ids)
        x = self.embed(token_ids, segment_ids)
        bias = self["Attention-Bias"]([token_ids, segment_ids])
        source = []
        for index in range(self.config.num_hidden_layers):
            x, (k, v) = self.block(index, x, bias, return_kv=True)
            # (sources, length, heads, size) x 2 -> (sources, 2, heads, ...)
            source.append(ops.transpose(ops.stack([k, v], 1), (0, 1, 3, 2, 4)))
        batch, length = token_ids.shape
        flat = ops.reshape(x, (batch * length, -1))
        last = ops.take(flat, ops.arange(batch) * length + lengths - 1, axis=0)
        source_bias = ops.where(ops.not_equal(token_ids, 0), 0.0, L.MASK_BIAS)
        attention = self["Transformer-0-MultiHeadSelfAttention"]
        outputs = ops.zeros(
            (
                batch * rows_per_source,
                self.config.num_hidden_layers,
                2,
                attention.heads,
                slots,
                attention.head_size,
            ),
            dtype=attention.compute_dtype,
        )
        cache = DecodingCache(
            ops.stack(source, axis=1),
            ops.cast(source_bias, "float32"),
            outputs,
            ops.repeat(ops.cast(lengths, "int32"), rows_per_source),
        )
        return self.mlm_logits(last[:, None])[:, 0], cache

    def call_with_cache(self, token_ids, cache, index):
        """One target token per row, at output slot `index`, on a cache.

        `token_ids` (rows,) are read as segment 1 at position
        `cache.starts + index`; they attend to their source, to the row's
        outputs before `index` and to themselves, through the same blocks
        as the full pass. Returns the MLM logits (rows, vocab), the hidden
        states (rows, hidden) and the cache with this token's keys and
        values written at `index`.
        """
        tokens = token_ids[:, None]
        positions = (cache.starts + index)[:, None]
        x = self.embed(tokens, ops.ones_like(tokens), offset=positions)
        new = []
        for layer in range(self.config.num_hidden_layers):
            x, (k, v) = self.block(
                layer, x, cache=cache.layer(layer, index), positions=positions
            )
            new.append(ops.stack([k[:, 0], v[:, 0]], axis=1))
        slots = ops.arange(cache.outputs.shape[4])
        here = ops.equal(slots, index)[None, None, None, None, :, None]
        new = ops.stack(new, axis=1)[:, :, :, :, None]
        cache = cache._replace(outputs=ops.where(here, new, cache.outputs))
        return self.mlm_logits(x)[:, 0], x[:, 0], cache

    @property
    def default_output(self):
        if not self.mlm:
            return "hidden"
        return "logits" if self.mlm == "linear" else "probas"


def _create_layers(config, application, mlm, init, dtype):
    """Every layer of the network, keyed by its bert4keras name.

    A `dtype` policy is made the global one while the layers are created,
    so that the layers inside them (attention's projections, the
    feed-forward's) get it too: set on the outer layers afterwards, it
    left those computing in float32, and the decoder's cache mixed both.
    """
    if dtype is None:
        return _layers(config, application, mlm, init)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        return _layers(config, application, mlm, init)
    finally:
        keras.config.set_dtype_policy(previous)


def _layers(config, application, mlm, init):
    hidden, eps = config.hidden_size, config.layer_norm_eps
    made = [
        L.Embedding(
            config.vocab_size,
            hidden,
            embeddings_initializer=init,
            name="Embedding-Token",
        ),
        keras.layers.Embedding(
            config.type_vocab_size,
            hidden,
            embeddings_initializer=init,
            name="Embedding-Segment",
        ),
        *P.position_embeddings(config, init),
        keras.layers.LayerNormalization(epsilon=eps, name="Embedding-Norm"),
        keras.layers.Dropout(
            config.hidden_dropout_prob, name="Embedding-Dropout"
        ),
        L.AttentionBias(application, name="Attention-Bias"),
    ]
    for index in range(config.num_hidden_layers):
        name = f"Transformer-{index}-MultiHeadSelfAttention"
        made += [
            P.build_attention(config, init, name),
            keras.layers.Dropout(
                config.hidden_dropout_prob, name=f"{name}-Dropout"
            ),
            keras.layers.LayerNormalization(epsilon=eps, name=f"{name}-Norm"),
        ]
        name = f"Transformer-{index}-FeedForward"
        made += [
            L.FeedForward(
                config.intermediate_size,
                config.hidden_act,
                kernel_initializer=init,
                name=name,
            ),
            keras.layers.Dropout(
                config.hidden_dropout_prob, name=f"{name}-Dropout"
            ),
            keras.layers.LayerNormalization(epsilon=eps, name=f"{name}-Norm"),
        ]
    if mlm:
        made += [
            keras.layers.Dense(
                hidden,
                activation=L.get_activation(config.hidden_act),
                kernel_initializer=init,
                name="MLM-Dense",
            ),
            keras.layers.LayerNormalization(epsilon=eps, name="MLM-Norm"),
            L.BiasAdd(name="MLM-Bias"),
            keras.layers.Activation(
                "softmax", dtype="float32", name="MLM-Activation"
            ),
        ]
    return {layer.name: layer for layer in made}


@L.serializable
class BertModel(keras.Model):
    """A BERT-family model as one Keras object: network, config, vocabulary.

    A functional model from `[token_ids, segment_ids]` to what the network
    returns (hidden states, MLM probabilities or logits), built in
    `__init__` from its arguments, as keras-hub builds a backbone: one
    class holding the encoder and the MLM head together, so that layer
    names and weight files stay bert4keras's and this toolkit's.
    `get_config` echoes every argument, so `model.save("m.keras")` and
    `keras.models.load_model("m.keras")` (after `import models.bert`)
    rebuild the same layers and the `BertNetwork` whose cached pass the
    decoders run, then load the weights into them.

    Attributes: `bert_network` (the `BertNetwork`), `bert_config` (the
    `BertConfig`), `application`, `with_mlm`, `keep_tokens` (the kept
    vocabulary rows, or None).
    """

    def __init__(
        self,
        bert_config,
        application="encoder",
        with_mlm=False,
        keep_tokens=None,
        dtype=None,
        **kwargs,
    ):
        config = resolve_config(bert_config, {})
        with_mlm = check_head(application, with_mlm)
        if keep_tokens is not None:
            keep_tokens = [int(token) for token in keep_tokens]
            if len(keep_tokens) != config.vocab_size:
                raise ValueError(
                    f"{len(keep_tokens)} keep_tokens for a vocab_size of "
                    f"{config.vocab_size}"
                )
        if isinstance(dtype, keras.DTypePolicy):
            dtype = dtype.name
        network = BertNetwork.create(config, application, with_mlm, dtype)
        token_ids = keras.Input((None,), dtype="int32", name="Input-Token")
        segment_ids = keras.Input((None,), dtype="int32", name="Input-Segment")
        kwargs.setdefault("name", f"bert_{application}")
        super().__init__(
            [token_ids, segment_ids], network(token_ids, segment_ids), **kwargs
        )
        # Not Keras layers or variables: Keras tracks none of these, so the
        # weight files hold the layers' variables only, as before.
        self.bert_network = network
        self.bert_config = config
        self.application = application
        self.with_mlm = with_mlm
        self.keep_tokens = keep_tokens
        self.dtype_name = dtype

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "bert_config": self.bert_config.to_dict(),
            "application": self.application,
            "with_mlm": self.with_mlm,
            "keep_tokens": self.keep_tokens,
            "dtype": self.dtype_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Keras's export of the forward pass (see README, "Export for
        serving"); on JAX, token and segment ids are told to share one
        length, which jax2tf would otherwise treat as two."""
        if keras.backend.backend() == "jax" and format == "tf_saved_model":
            options = dict(kwargs.get("jax2tf_kwargs") or {})
            options.setdefault("polymorphic_shapes", [["(batch, length)"] * 2])
            kwargs["jax2tf_kwargs"] = options
        return super().export(filepath, format=format, **kwargs)


def check_head(application, with_mlm):
    """`with_mlm` as built: 'unilm' and 'lm' always have the MLM head."""
    if application not in APPLICATIONS:
        raise ValueError(
            f"unknown application {application!r}; "
            f"expected one of {APPLICATIONS}"
        )
    if application != "encoder" and not with_mlm:
        with_mlm = True
    if with_mlm and with_mlm not in MLM_OUTPUTS:
        raise ValueError(
            f"with_mlm must be False, True, 'softmax' or 'linear', "
            f"got {with_mlm!r}"
        )
    return with_mlm


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model=None,
    application="encoder",
    with_mlm=False,
    keep_tokens=None,
    dtype=None,
    name=None,
    **overrides,
):
    """Build a BERT-family model, optionally loading a checkpoint.

    Args:
        config_path: `bert_config.json` / `config.json`, a model directory,
            a dict or a `BertConfig`; None uses BERT-base defaults.
        checkpoint_path: Google TF checkpoint, safetensors, `pytorch_model.bin`
            or Keras `.weights.h5` (see `weights.load_checkpoint`).
        model: 'bert' (also 'roberta': RoBERTa-wwm-ext is a BERT),
            'roformer' or 'nezha'; it sets the config's `model_type`. None: the
            config's (Hugging Face's `config.json` names it; 'bert' if not).
        application: 'encoder', 'unilm' (seq2seq mask) or 'lm' (causal).
        with_mlm: add the MLM head; True/'softmax' for probabilities,
            'linear' for logits. 'unilm' and 'lm' always have it.
        keep_tokens: vocabulary rows to keep (from
            `load_vocab(..., simplified=True)`); the model's vocab_size
            becomes `len(keep_tokens)`.
        dtype: a Keras dtype policy name such as 'mixed_bfloat16'.
        name: the model's name (default `{model}_{application}`).
        **overrides: config fields to override (e.g. `num_hidden_layers=2`).

    Returns:
        a `BertModel`: a functional `keras.Model` that saves to `.keras`.
    """
    if model is not None:
        if not isinstance(model, str) or model.lower() not in MODELS:
            raise ValueError(
                f"unknown model {model!r}; expected one of {MODELS}"
            )
        overrides = {**overrides, "model_type": model.lower()}
    config = resolve_config(config_path, overrides)
    if keep_tokens is not None:
        config = dataclasses.replace(config, vocab_size=len(keep_tokens))
    built = BertModel(
        config,
        application,
        with_mlm,
        keep_tokens=keep_tokens,
        dtype=dtype,
        name=name or f"{model or config.model_type}_{application}",
    )
    if checkpoint_path is not None:
        from weights import load_checkpoint

        load_checkpoint(built, checkpoint_path, keep_tokens=keep_tokens)
    return built
