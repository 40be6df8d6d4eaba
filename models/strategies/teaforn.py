"""Teacher-forcing with N-grams (`teaforn`): passes that read the
previous pass's outputs."""

import dataclasses
from typing import ClassVar

from keras import ops

from models import targets
from models.strategies.base import Baseline
from models.strategies.base import feed_previous
from models.strategies.options import check_choice
from models.strategies.options import check_count
from models.strategies.options import parse_floats
from models.targets import target_positions


def topk_embeddings(network, logits, k: int):
    """Per position, the mean of the `k` likeliest tokens' embeddings,
    weighted by their probabilities renormalised over those `k`.

    A softmax over the top-k logits is exactly that renormalisation.
    Differentiable in the logits and in E, like the hidden-state feed.
    """
    values, indices = ops.top_k(ops.cast(logits, "float32"), k)
    vectors = network["Embedding-Token"](indices)  # (batch, length, k, h)
    weights = ops.cast(ops.softmax(values, axis=-1), vectors.dtype)
    return ops.einsum("blk,blkh->blh", weights, vectors)


@dataclasses.dataclass
class TeaForN(Baseline):
    """Teacher-forcing with N-grams (Goodman et al., 2020).

    The whole network runs `n` times with the same weights. Pass 1 is
    teacher-forced; pass k + 1 keeps the source positions' token
    embeddings and, at every target position t, feeds a vector from pass
    k's position t - 1 in place of t's token embedding (segment and
    position embeddings are still added): its final hidden state
    (`feed='hidden'`) or the probability-weighted mean of the embeddings
    of its `topk` likeliest tokens (`feed='topk'`). Gradients flow through
    every pass. Decoding runs pass 1 only, so inference is unchanged.

    The objective is Σ_k λ_k·CE_k with λ = `weights` (default 1.0 each),
    deliberately not divided by Σλ: the weights say both how much each
    pass counts and the overall scale, and `weights=0.5,0.5` gives the
    mean. With n = 1 and λ = 1 it is exactly the baseline. Under Adam the
    overall scale hardly matters; under SGD it scales the step. Logs
    `ce_1`, ..., `ce_n`; `ce_1` is the baseline's loss, so it compares
    across strategies where `loss` does not.
    """

    name: ClassVar[str] = "teaforn"
    n: int = 2
    weights: tuple | str | float | None = None
    feed: str = "hidden"
    topk: int = 4

    def __post_init__(self):
        self.n = check_count("n", self.n)
        self.topk = check_count("topk", self.topk)
        check_choice("feed", self.feed, ("hidden", "topk"))
        if self.weights is None:
            self.weights = (1.0,) * self.n
        self.weights = parse_floats("weights", self.weights)
        if len(self.weights) != self.n:
            raise ValueError(
                f"weights has {len(self.weights)} values for n={self.n} passes"
            )
        if min(self.weights) < 0 or not sum(self.weights) > 0:
            raise ValueError(
                f"weights must be >= 0 and not all 0, got {self.weights}"
            )
        self.metric_names = tuple(f"ce_{k}" for k in range(1, self.n + 1))

    def fed_vectors(self, network, hidden, logits, index):
        """What pass k hands to pass k + 1, per position (before shifting):
        `logits` are at the scored slots of `index` only, which are the
        positions whose outputs are fed."""
        if self.feed == "hidden":
            return hidden
        vectors = topk_embeddings(network, logits, self.topk)
        return targets.spread(vectors, index)

    def loss(self, trainer, batch):
        network = trainer.network
        index = trainer.target_index(batch)
        fed, total, figures = None, 0.0, {}
        for k, weight in enumerate(self.weights, start=1):
            hidden = network(
                batch.inputs,
                batch.segment_ids,
                token_embeddings=fed,
                training=True,
                output="hidden",
            )
            logits, labels, mask = trainer.head_at_targets(batch, hidden, index)
            figures[f"ce_{k}"] = trainer.label_loss(logits, labels, mask)
            total += weight * figures[f"ce_{k}"]
            if k < self.n:
                fed = feed_previous(
                    network["Embedding-Token"](batch.inputs),
                    self.fed_vectors(network, hidden, logits, index),
                    target_positions(batch.inputs, batch.segment_ids),
                )
        return total, figures
