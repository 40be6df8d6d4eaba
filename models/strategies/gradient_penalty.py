"""The gradient penalty on the token embeddings (`gp`)."""

import dataclasses
from typing import ClassVar

from keras import ops

from models.strategies.base import Baseline


@dataclasses.dataclass
class GradientPenalty(Baseline):
    """Cross-entropy + 0.5·ε·‖∂CE/∂E‖², E the token-embedding matrix.

    The gradient is the full one: E is both the input lookup and the tied
    MLM output projection, summed over repeated tokens before squaring.
    (bojone's `gradient_penalty.py` squares the `.values` of TF1's
    IndexedSlices gradient instead: one slice per looked-up token, i.e. the
    gradient w.r.t. each input embedding vector, plus the output part.)
    Training needs the penalty's own gradient, a second derivative (double
    backprop), which `trainer.value_and_grad` keeps. Logs `gp`, the term
    added to the cross-entropy.
    """

    name: ClassVar[str] = "gp"
    metric_names: ClassVar[tuple] = ("gp",)
    # Differentiates a gradient: see `backend.check_checkpointing`.
    second_derivative: ClassVar[bool] = True
    epsilon: float = 1.0

    def loss(self, trainer, batch):
        cross_entropy, grad = trainer.value_and_grad(
            lambda: trainer.cross_entropy(batch), trainer.embeddings
        )
        # float32 like the loss, whatever the variable's dtype.
        penalty = ops.cast(
            0.5 * self.epsilon * ops.sum(ops.square(grad)), "float32"
        )
        return cross_entropy + penalty, {"gp": penalty}
