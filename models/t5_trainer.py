"""Training a T5 v1.1 / mT5 encoder-decoder under the exposure-bias
strategies.

The decoder's input stream is laid out as a UniLM target segment behind
a one-token source: `target_ids` = [start (0), title..., end (1), padding
(0)...], the prediction at position t scored against the token at t + 1.
With `segment_ids = (target_ids != 0)` (0 at the start token and at
padding, 1 on the title and its end token) every rule the strategies and
`models/targets.py` apply to a UniLM target segment applies unchanged to
the decoder's inputs: replacement corrupts title tokens, scheduled
sampling and TeaForN feed the previous position's output, the gradient
penalty and FGM/PGD/VAT perturb the shared token embedding (encoder and
decoder inputs, as they perturb source and target in UniLM). The encoder
reads the clean source in every pass.

    trainer = EncoderDecoderTrainer(model, strategy="gp", epsilon=1.0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    trainer.fit(dataset_of_(source_ids, target_ids), epochs=...)
"""

from keras import ops

from models.trainer import Seq2SeqTrainer
from models.trainer import unpack_pair


class DecoderView:
    """A `T5Network` as the UniLM network strategies call: the decoder on
    the token stream they pass, over the batch's source (`bind`)."""

    def __init__(self, network):
        self.t5 = network
        self.config = network.config
        self.source_ids = None

    def bind(self, source_ids):
        """The encoder's input of the batch being trained."""
        self.source_ids = source_ids

    def __getitem__(self, name):
        return self.t5[name]

    def __call__(
        self,
        token_ids,
        segment_ids=None,
        token_embeddings=None,
        training=False,
        output=None,
    ):
        """Decoder hidden states ('hidden'), logits or probabilities of
        `token_ids` (the decoder's inputs); `segment_ids` are implied."""
        if self.source_ids is None:
            raise RuntimeError("DecoderView: no source bound to this pass")
        encoded = self.t5.encode(self.source_ids, training=training)
        hidden = self.t5.decode(
            token_ids, encoded, self.source_ids, token_embeddings, training
        )
        if output == "hidden":
            return hidden
        logits = ops.cast(self.t5.lm_logits(hidden), "float32")
        return logits if output == "logits" else ops.softmax(logits)

    def mlm_logits(self, hidden):
        """The output layer (UniLM's MLM head, for strategies)."""
        return self.t5.lm_logits(hidden)


def unpack_pairs(data):
    """(target_ids, source_ids) from `(source_ids, target_ids)` batches,
    also wrapped as `((source_ids, target_ids),)` or with a None label."""
    source_ids, target_ids = unpack_pair(
        data, "EncoderDecoderTrainer", "(source_ids, target_ids)", "target ids"
    )
    return target_ids, source_ids


class EncoderDecoderTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` for a model from `models.t5.build_t5_model`.

    Batches are `(source_ids, target_ids)`, both padded with 0, targets
    laid out as the module docstring says. Arguments are
    `Seq2SeqTrainer`'s; `max_targets` counts title tokens plus the end
    token.
    """

    # They decode titles inside the step through the UniLM network's own
    # pass, on repeated rows that the encoder's memory does not follow.
    NOT_BUILT = ("scst", "mrt", "oracle")

    def __init__(self, model, strategy="baseline", **kwargs):
        super().__init__(model, strategy, **kwargs)
        if self.strategy.name in self.NOT_BUILT:
            raise ValueError(
                f"strategy {self.strategy.name!r} is not built for an "
                "encoder-decoder (it decodes titles inside the step through "
                "the UniLM network); use a BERT-family model"
            )

    @staticmethod
    def find_network(model):
        network = getattr(model, "t5_network", None)
        if network is None:
            raise ValueError(
                "EncoderDecoderTrainer needs a model from "
                "models.t5.build_t5_model"
            )
        return DecoderView(network)

    unpack_batch = staticmethod(unpack_pairs)

    def compute_losses(self, target_ids, source_ids, training):
        """`Seq2SeqTrainer.compute_losses` on the decoder's stream."""
        self.network.bind(ops.cast(source_ids, "int32"))
        target_ids = ops.cast(target_ids, "int32")
        segment_ids = ops.cast(ops.not_equal(target_ids, 0), "int32")
        return super().compute_losses(target_ids, segment_ids, training)
