"""Adversarial training on the token embeddings: `fgm`, `pgd`, `vat`.

Each perturbs E, the token-embedding matrix (both the input lookup and the
tied output projection), and reads E + δ through `trainer.overridden`, so
that E itself is restored exactly.
"""

import dataclasses
import math
from typing import ClassVar

import keras
from keras import ops

from models.losses import token_kl_divergence
from models.strategies.base import Baseline
from models.strategies.options import check_choice
from models.strategies.options import check_count
from models.strategies.options import check_not_negative
from models.strategies.options import check_positive


def norm(x, per_row):
    """‖x‖ of the whole matrix, or of each row (kept as a column)."""
    if per_row:
        return ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return ops.sqrt(ops.sum(ops.square(x)))


def project(delta, epsilon, per_row):
    """δ scaled back onto the ε-ball where it left it (ε = inf: δ)."""
    if math.isinf(epsilon):
        return delta
    return delta * ops.minimum(1.0, epsilon / (norm(delta, per_row) + 1e-12))


@dataclasses.dataclass
class FGM(Baseline):
    """Fast gradient method on the token embeddings (Miyato et al., 2017).

    With g = ∂CE/∂E over the whole matrix (held constant), a second pass
    reads E + δ, δ = ε·g/(‖g‖ + 1e-8), and the objective is the mean
    ½(CE(E) + CE(E + δ)): ε = 0 gives the baseline's loss and, up to the
    order of float32 sums, its gradients. (The usual PyTorch FGM recipe
    adds the two gradients, twice these; bert4keras's
    `adversarial_training` trains on CE(E + δ) alone and subtracts δ
    after the update, which is not exact in floating point.) The second
    pass reads E + δ through `trainer.overridden`: JAX maps E to E + δ
    without writing it, TensorFlow assigns E + δ and then the saved value
    back, so after a step E has moved by exactly the optimizer's update.
    ε defaults to 0.5, as in bert4keras's example. Logs `adv_ce`,
    CE(E + δ), and `delta_norm`, ‖δ‖ (ε unless g = 0).
    """

    name: ClassVar[str] = "fgm"
    metric_names: ClassVar[tuple] = ("adv_ce", "delta_norm")
    epsilon: float = 0.5

    def __post_init__(self):
        if self.epsilon < 0:
            raise ValueError(
                f"epsilon must not be negative, got {self.epsilon}"
            )

    def loss(self, trainer, batch):
        embeddings = trainer.embeddings
        cross_entropy, grad = trainer.value_and_grad(
            lambda: trainer.cross_entropy(batch), embeddings
        )
        grad = ops.stop_gradient(grad)
        delta = self.epsilon * grad / (norm(grad, False) + 1e-8)
        with trainer.overridden(embeddings, embeddings + delta):
            adversarial = trainer.cross_entropy(batch)
        delta_norm = ops.cast(norm(delta, False), "float32")
        figures = {"adv_ce": adversarial, "delta_norm": delta_norm}
        return 0.5 * (cross_entropy + adversarial), figures


@dataclasses.dataclass
class PGD(Baseline):
    """Projected gradient descent on the token embeddings (Madry et al.,
    2018; for text, Zhu et al., "FreeLB", 2020).

    `steps` K ascent steps on δ, from δ = 0: g_k = ∂CE/∂E at E + δ_k (held
    constant), δ_{k+1} = Π(δ_k + α·g_k/(‖g_k‖ + 1e-8)), Π the projection
    onto the ε-ball; α = `alpha`, ε = `epsilon` (`inf`: no projection).
    `norm='matrix'` takes ‖·‖ over the whole matrix E, as `fgm` does;
    `norm='row'` per embedding row (each row steps α along its own
    gradient and stays within ε). E is both the input lookup and the tied
    output projection, so δ perturbs both, as in `fgm`. The objective is
    ½(CE(E) + CE(E + δ_K)), or with `average=True` ½(CE(E) + mean_k
    CE(E + δ_k)), k = 1..K (FreeLB's mean over the ascent steps). With
    K = 1 and ε = inf, δ_1 is `fgm`'s δ for ε = α. Each step reads E + δ
    through `trainer.overridden`, so E is restored exactly. K + 1 passes,
    each differentiated, so about K + 1 baseline steps (bert4torch's
    defaults: K = 3, α = 0.3, ε = 1). Logs `adv_ce` (the adversarial term) and
    `delta_norm` (‖δ_K‖, the largest row norm with `norm='row'`).
    """

    name: ClassVar[str] = "pgd"
    metric_names: ClassVar[tuple] = ("adv_ce", "delta_norm")
    steps: int = 3
    alpha: float = 0.3
    epsilon: float = 1.0
    norm: str = "matrix"
    average: bool | int = False

    def __post_init__(self):
        self.steps = check_count("steps", self.steps)
        check_positive("alpha", self.alpha)
        check_positive("epsilon", self.epsilon)
        check_choice("norm", self.norm, ("matrix", "row"))
        check_choice("average", self.average, (False, True, 0, 1))
        self.average = bool(self.average)

    def ascend(self, delta, grad):
        """One projected ascent step of δ along `grad`."""
        per_row = self.norm == "row"
        step = self.alpha * grad / (norm(grad, per_row) + 1e-8)
        return project(delta + step, self.epsilon, per_row)

    def loss(self, trainer, batch):
        embeddings = trainer.embeddings

        def cross_entropy():
            return trainer.cross_entropy(batch)

        clean, grad = trainer.value_and_grad(cross_entropy, embeddings)
        delta = self.ascend(0.0, ops.stop_gradient(grad))
        adversarial = []
        for _ in range(self.steps - 1):
            with trainer.overridden(embeddings, embeddings + delta):
                value, grad = trainer.value_and_grad(cross_entropy, embeddings)
            adversarial.append(value)
            delta = self.ascend(delta, ops.stop_gradient(grad))
        with trainer.overridden(embeddings, embeddings + delta):
            adversarial.append(cross_entropy())
        if not self.average:
            adversarial = adversarial[-1:]
        adv_ce = sum(adversarial) / len(adversarial)
        delta_norm = ops.max(norm(delta, self.norm == "row"))
        figures = {
            "adv_ce": adv_ce,
            "delta_norm": ops.cast(delta_norm, "float32"),
        }
        return 0.5 * (clean + adv_ce), figures


@dataclasses.dataclass
class VAT(Baseline):
    """Virtual adversarial training (Miyato et al., TPAMI 2018) on the
    token embeddings.

    p = the model's next-token distributions at the target positions on
    a clean pass (held constant). The perturbation r of E that most
    changes them is found by `power_iterations` power iterations from a
    random unit direction d: r = ξ·d, g = ∂KL(p ‖ p(E + r))/∂r, d =
    g/‖g‖ (ξ = `xi`), and r_adv = ε·d (ε = `epsilon`), norms over the
    whole matrix as in `fgm`. The objective is CE + λ·KL(p ‖ p(E +
    r_adv)), λ = `weight`: no labels enter the adversarial term. As in
    `fgm` and `pgd`, E is both the input lookup and the tied output
    projection, and every perturbed pass reads E + r through
    `trainer.overridden`. All passes run in training mode (with dropout),
    so with dropout on the KL also holds the dropout noise. Costs one
    forward-backward pass per power iteration and one forward pass more
    than the baseline. Logs `ce` and `vat_kl`, the KL term before λ.
    """

    name: ClassVar[str] = "vat"
    metric_names: ClassVar[tuple] = ("ce", "vat_kl")
    epsilon: float = 1.0
    weight: float = 1.0
    xi: float = 1e-6
    power_iterations: int = 1

    def __post_init__(self):
        check_positive("epsilon", self.epsilon)
        check_positive("xi", self.xi)
        self.power_iterations = check_count(
            "power_iterations", self.power_iterations
        )
        check_not_negative("weight", self.weight)

    def divergence(self, trainer, batch, clean_logits):
        """KL(p ‖ the distributions of a pass over E as it reads now)."""
        logits, _, mask = trainer.target_logits(batch, training=True)
        return token_kl_divergence(clean_logits, logits, mask)

    def adversarial_direction(self, trainer, batch, clean_logits):
        """The unit direction d after the power iterations (constant)."""
        embeddings = trainer.embeddings
        direction = keras.random.normal(
            ops.shape(embeddings), seed=trainer.seed_generator
        )
        for _ in range(self.power_iterations):
            probe = self.xi * direction / (norm(direction, False) + 1e-12)
            # The gradient in r at r = ξ·d is the gradient in E at E + ξ·d:
            # E + r is what every pass reads.
            with trainer.overridden(embeddings, embeddings + probe):
                _, direction = trainer.value_and_grad(
                    lambda: self.divergence(trainer, batch, clean_logits),
                    embeddings,
                )
            direction = ops.stop_gradient(direction)
        return direction / (norm(direction, False) + 1e-12)

    def loss(self, trainer, batch):
        logits, labels, mask = trainer.target_logits(batch, training=True)
        cross_entropy = trainer.label_loss(logits, labels, mask)
        clean = ops.stop_gradient(logits)
        direction = self.adversarial_direction(trainer, batch, clean)
        embeddings = trainer.embeddings
        with trainer.overridden(
            embeddings, embeddings + self.epsilon * direction
        ):
            divergence = self.divergence(trainer, batch, clean)
        figures = {"ce": cross_entropy, "vat_kl": divergence}
        return cross_entropy + self.weight * divergence, figures
