"""Professor forcing (`professor`): free-running hidden states that a
discriminator must not tell from teacher-forced ones.

The free run, the discriminator and its optimizer live in
`models/professor.py`; this module holds the strategy: its options, what
it builds beside the model, and its loss.
"""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

from models import backend
from models.professor import Adversary
from models.professor import discriminator_loss
from models.professor import free_run_inputs
from models.professor import generator_loss
from models.professor import title_positions
from models.strategies.base import Baseline
from models.strategies.options import check_choice
from models.strategies.options import check_count
from models.strategies.options import check_not_negative
from models.strategies.options import check_positive


@dataclasses.dataclass
class Professor(Baseline):
    """Professor forcing (Lamb, Goyal et al., 2016) for the UniLM BERT.

    Three passes per step. The teacher-forced pass gives the cross-entropy
    and H_t, the final hidden states of the title positions. The free run
    (`models/professor.py`, `free_run_inputs`) fills each title position
    with the model's own output, greedy (`free_run='greedy'`) or sampled
    (`'sample'`): an in-graph loop of full passes, one per title slot,
    without dropout or gradient, inside the compiled step. The free pass
    reads the source and that generated title, with dropout and gradient,
    and gives H_f at the same positions.

    A discriminator D (`Discriminator`: `discriminator_layers` residual
    convolutions of `discriminator_units` features, pooled) has its own
    Adam optimizer (`discriminator_lr`): it takes one step per measured
    step on ½·[−log D(H_t) − log(1 − D(H_f))], both held constant. The
    model minimises CE + λ·C_f with C_f = −log D(H_f), λ =
    `adversarial_weight`: its free-running dynamics should pass for
    teacher-forced ones, while H_t is held constant (the paper's main
    variant). C_f reads D's weights but trains only the model; D's loss
    trains only D. D and its optimizer are saved and restored with a run.

    Every `every` optimizer steps (1: every step) the free run, D's step
    and C_f happen; the steps between are plain teacher forcing. λ is 0
    for the first `warmup` optimizer steps (D still learns). With λ = 0
    the model trains exactly as `baseline` while D measures how far apart
    the two dynamics are. Logs `ce` (the baseline's loss, comparable
    across strategies), `adversarial` (C_f), `disc_loss` and
    `disc_accuracy` (over both runs; 0.5 is chance), the last three as
    means over the steps that measured them.
    """

    name: ClassVar[str] = "professor"
    metric_names: ClassVar[tuple] = (
        "ce",
        "adversarial",
        "disc_loss",
        "disc_accuracy",
    )
    adversarial_weight: float = 1.0
    free_run: str = "greedy"
    every: int = 1
    warmup: int = 0
    discriminator_units: int = 128
    discriminator_layers: int = 2
    discriminator_lr: float = 1e-4

    def __post_init__(self):
        check_not_negative("adversarial_weight", self.adversarial_weight)
        check_choice("free_run", self.free_run, ("greedy", "sample"))
        self.every = check_count("every", self.every)
        self.discriminator_units = check_count(
            "discriminator_units", self.discriminator_units
        )
        self.discriminator_layers = check_count(
            "discriminator_layers", self.discriminator_layers
        )
        if isinstance(self.warmup, bool) or int(self.warmup) != self.warmup:
            raise ValueError(f"warmup must be an integer, got {self.warmup!r}")
        check_not_negative("warmup", self.warmup)
        self.warmup = int(self.warmup)
        check_positive("discriminator_lr", self.discriminator_lr)

    def build(self, trainer):
        if self.every > 1 and not backend.branches_may_synchronise():
            raise ValueError(
                "professor: every > 1 is not available with TensorFlow's "
                "data parallelism (MirroredStrategy cannot synchronise "
                "replicas within a branch taken at run time); use every=1, "
                "or the JAX backend"
            )
        return Adversary(
            trainer.network.config.hidden_size,
            self.discriminator_units,
            self.discriminator_layers,
            self.discriminator_lr,
            name="professor_adversary",
        )

    def loss(self, trainer, batch):
        teacher = trainer.network(
            batch.inputs, batch.segment_ids, training=True, output="hidden"
        )
        logits, labels, mask = trainer.head_at_targets(batch, teacher)
        cross_entropy = trainer.label_loss(logits, labels, mask)
        step = trainer.optimizer.iterations
        weight = self.adversarial_weight * ops.cast(
            step >= self.warmup, "float32"
        )
        terms, measured = self.scheduled_terms(trainer, batch, teacher, step)
        names = ("adversarial", "disc_loss", "disc_accuracy")
        figures = dict(zip(names, terms))
        if measured is not None:
            figures = {k: (v, measured) for k, v in figures.items()}
        figures["ce"] = cross_entropy
        adversarial = terms[0]
        return cross_entropy + weight * adversarial, figures

    def scheduled_terms(self, trainer, batch, teacher, step):
        """`(adversarial_terms, measured)` at `step`: measured None when
        every step runs them, else 1.0 in the steps that do (every
        `every`-th) and 0.0, with terms of 0, in the others."""
        if self.every == 1:
            return self.adversarial_terms(trainer, batch, teacher), None
        measured = ops.equal(step % self.every, 0)
        terms = backend.cond(
            measured,
            lambda: self.adversarial_terms(trainer, batch, teacher),
            lambda: (ops.zeros(()), ops.zeros(()), ops.zeros(())),
            trainer.state_variables(),
        )
        return terms, ops.cast(measured, "float32")

    def adversarial_terms(self, trainer, batch, teacher):
        """(C_f, D's loss, D's accuracy), after one step of D."""
        adversary = trainer.strategy_state
        title = title_positions(batch.token_ids, batch.segment_ids)
        free = self.free_states(trainer, batch)
        # Before D's step: C_f and D's loss see the same D.
        adversarial = generator_loss(adversary, free, title)
        teacher, free = ops.stop_gradient(teacher), ops.stop_gradient(free)
        disc_loss, accuracy = adversary.train(
            lambda: discriminator_loss(adversary, teacher, free, title),
            trainer.state_variables(),
        )
        return adversarial, disc_loss, accuracy

    def free_states(self, trainer, batch):
        """Final hidden states of the free pass: the network (training,
        with gradient) reading the source and its own free-run title."""
        uniforms = None
        if self.free_run == "sample":
            uniforms = keras.random.uniform(
                ops.shape(batch.token_ids), seed=trainer.seed_generator
            )
        network = trainer.network
        inputs = free_run_inputs(
            network, batch.token_ids, batch.segment_ids, uniforms
        )
        return network(
            inputs, batch.segment_ids, training=True, output="hidden"
        )
