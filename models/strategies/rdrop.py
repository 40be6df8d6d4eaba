"""R-Drop (`rdrop`): two dropout draws of one batch kept close."""

import dataclasses
from typing import ClassVar

from models.losses import token_kl_divergence
from models.strategies.base import Baseline
from models.strategies.options import check_not_negative


@dataclasses.dataclass
class RDrop(Baseline):
    """R-Drop (Liang et al., NeurIPS 2021): two passes with different
    dropout draws, P1 and P2 their target-position distributions.

    The paper's loss is CE_1 + CE_2 + α·½(KL(P1 ‖ P2) + KL(P2 ‖ P1));
    ours is half of it, ½(CE_1 + CE_2) + α·½·½(KL(P1 ‖ P2) + KL(P2 ‖
    P1)), so that `loss` compares with the baseline's while α (`alpha`)
    keeps the paper's meaning (its weight against the cross-entropy).
    α = 0 is the mean of two baseline losses; without dropout the passes
    agree and the KL term is 0. The paper tunes α per task; 1.0 here.
    Costs two passes. Logs `ce`
    (½(CE_1 + CE_2)) and `rdrop_kl`, the symmetric KL before α.
    """

    name: ClassVar[str] = "rdrop"
    metric_names: ClassVar[tuple] = ("ce", "rdrop_kl")
    alpha: float = 1.0

    def __post_init__(self):
        check_not_negative("alpha", self.alpha)

    def loss(self, trainer, batch):
        first, labels, mask = trainer.target_logits(batch, training=True)
        second, _, _ = trainer.target_logits(batch, training=True)
        cross_entropy = 0.5 * (
            trainer.label_loss(first, labels, mask)
            + trainer.label_loss(second, labels, mask)
        )
        divergence = 0.5 * (
            token_kl_divergence(first, second, mask)
            + token_kl_divergence(second, first, mask)
        )
        figures = {"ce": cross_entropy, "rdrop_kl": divergence}
        return cross_entropy + 0.5 * self.alpha * divergence, figures
