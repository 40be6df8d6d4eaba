"""Sequence-level strategies: the model decodes titles inside the step
and learns from them as a whole (`scst`, `mrt`) or reads them back
(`oracle`).

Titles are decoded and scored in the compiled step (`models/
sequence_level.py`, `models/rewards.py`); they cover the reference
title's positions. These strategies usually start from a model trained
with teacher forcing: the task scripts' `--init RUN_DIR`.
"""

import dataclasses
from typing import ClassVar

from keras import ops

from models import sequence_level as seq
from models.rewards import REWARDS
from models.strategies.base import Baseline
from models.strategies.options import check_choice
from models.strategies.options import check_count
from models.strategies.options import check_not_negative
from models.strategies.options import check_positive
from models.strategies.options import check_rate
from models.strategies.scheduled_sampling import SCHEDULES
from models.strategies.scheduled_sampling import sampling_rate
from models.targets import target_positions


def check_integer(name, value) -> int:
    """An integer >= 0; `2.0` passes (the CLI parses numbers loosely)."""
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


@dataclasses.dataclass
class SequenceLevel(Baseline):
    """Options every reward-driven strategy shares: the reward, the RL
    share `weight` of the objective (1 - weight for the cross-entropy),
    and the sampling temperature."""

    reward: str = "rouge-l"
    weight: float = 0.5
    temperature: float = 1.0

    def __post_init__(self):
        check_choice("reward", self.reward, REWARDS)
        check_rate("weight", self.weight)
        check_positive("temperature", self.temperature)

    def reference(self, trainer, batch):
        return seq.title_index(trainer, batch.token_ids, batch.segment_ids)

    def rewards(self, trainer, decoded_ids, segment_ids, reference):
        decoded = seq.title_index(trainer, decoded_ids, segment_ids)
        return seq.title_rewards(self.reward, decoded, reference)


@dataclasses.dataclass
class SelfCritical(SequenceLevel):
    """Self-critical sequence training (Rennie et al., 2017), mixed with
    the cross-entropy (Paulus et al., 2018), MIXER's annealing as an option
    (Ranzato et al., 2016).

    Per row, a title w is sampled (softmax(logits / temperature)) and a
    title ŵ decoded greedily, both in the step; their rewards r (`reward`:
    ROUGE-L or BLEU against the reference, `models/rewards.py`) make the
    REINFORCE loss L_rl = -(r(w) - r(ŵ))·log p(w), averaged over rows,
    whose baseline r(ŵ) is what the model earns at inference. The
    objective is s·CE + (1 - s)·L_rl with MLE share s = 1 - `weight`; with
    `anneal_steps` N > 0, s falls linearly from 1 to 1 - weight over the
    first N optimizer steps (MIXER moves from cross-entropy to REINFORCE
    over training; here the share moves, not a token boundary). Logs `ce`,
    `reward` (of the samples), `greedy_reward`, `mle_share`.
    """

    name: ClassVar[str] = "scst"
    metric_names: ClassVar[tuple] = (
        "ce",
        "reward",
        "greedy_reward",
        "mle_share",
    )
    anneal_steps: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.anneal_steps = check_integer("anneal_steps", self.anneal_steps)

    def mle_share(self, step):
        """s at optimizer step `step`."""
        ramp = 1.0 + 0.0 * ops.cast(step, "float32")
        if self.anneal_steps:
            ramp = ops.minimum(ops.cast(step, "float32") / self.anneal_steps, 1)
        return 1.0 - self.weight * ramp

    def loss(self, trainer, batch):
        cross_entropy = trainer.cross_entropy(batch)
        share = self.mle_share(trainer.optimizer.iterations)
        reference = self.reference(trainer, batch)
        uniforms = seq.uniforms_like(batch.token_ids, trainer.seed_generator)
        network, segments = trainer.network, batch.segment_ids
        sampled = seq.decode(
            network, batch.token_ids, segments, uniforms, self.temperature
        )
        greedy = seq.decode(network, batch.token_ids, segments)
        reward = self.rewards(trainer, sampled, segments, reference)
        baseline = self.rewards(trainer, greedy, segments, reference)
        log_p, rows = seq.sequence_log_probs(
            trainer, sampled, segments, reference.end
        )
        advantage = ops.stop_gradient(reward - baseline)
        reinforce = seq.row_mean(-advantage * log_p, rows)
        figures = {
            "ce": cross_entropy,
            "reward": seq.row_mean(reward, rows),
            "greedy_reward": seq.row_mean(baseline, rows),
            "mle_share": share,
        }
        return share * cross_entropy + (1.0 - share) * reinforce, figures


@dataclasses.dataclass
class MinimumRisk(SequenceLevel):
    """Minimum risk training (Shen et al., 2016), mixed with the
    cross-entropy.

    Per row, `candidates` k titles are sampled in the step; duplicates
    count once. Their probabilities, sharpened by α = `sharpness` and
    renormalised over the distinct candidates, Q(y) = p(y)^α / Σ p(y')^α,
    weigh the risk 1 - r(y) (`reward`: ROUGE-L or BLEU): the expected risk
    R = Σ_y Q(y)·(1 - r(y)), averaged over rows, has gradient through Q
    (through log p of each candidate). The objective is
    (1 - weight)·CE + weight·R. Logs `ce`, `risk` and `reward` (the mean
    over candidates).
    """

    name: ClassVar[str] = "mrt"
    metric_names: ClassVar[tuple] = ("ce", "risk", "reward")
    candidates: int = 4
    sharpness: float = 5e-3

    def __post_init__(self):
        super().__post_init__()
        self.candidates = check_count("candidates", self.candidates)
        check_positive("sharpness", self.sharpness)

    def loss(self, trainer, batch):
        cross_entropy = trainer.cross_entropy(batch)
        k = self.candidates
        token_ids = seq.repeat_rows(batch.token_ids, k)
        segments = seq.repeat_rows(batch.segment_ids, k)
        reference = self.reference(trainer, batch)
        reference = seq.TitleIndex(
            reference.index._replace(
                labels=seq.repeat_rows(reference.index.labels, k),
                mask=seq.repeat_rows(reference.index.mask, k),
            ),
            seq.repeat_rows(reference.end, k),
        )
        uniforms = seq.uniforms_like(token_ids, trainer.seed_generator)
        sampled = seq.decode(
            trainer.network, token_ids, segments, uniforms, self.temperature
        )
        reward = self.rewards(trainer, sampled, segments, reference)
        log_p, rows = seq.sequence_log_probs(
            trainer, sampled, segments, reference.end
        )
        distinct = distinct_candidates(trainer, sampled, segments, k)
        risk = expected_risk(
            ops.reshape(log_p, (-1, k)) * self.sharpness,
            ops.reshape(1.0 - reward, (-1, k)),
            distinct,
        )
        rows = ops.reshape(rows, (-1, k))[:, 0]
        figures = {
            "ce": cross_entropy,
            "risk": seq.row_mean(risk, rows),
            "reward": seq.row_mean(
                ops.mean(ops.reshape(reward, (-1, k)), 1), rows
            ),
        }
        objective = (1.0 - self.weight) * cross_entropy
        return objective + self.weight * figures["risk"], figures


def expected_risk(scores, risks, distinct):
    """(batch,) Σ_y Q(y)·risk(y), Q = softmax of `scores` (batch, k) over
    the candidates `distinct` marks."""
    scores = ops.where(distinct, scores, -1e9)
    weights = ops.softmax(scores, axis=-1)
    return ops.sum(weights * risks, axis=-1)


def distinct_candidates(trainer, decoded_ids, segment_ids, k):
    """(batch, k) bool: a candidate no earlier candidate of its row equals
    (the same title tokens up to the end)."""
    decoded = seq.title_index(trainer, decoded_ids, segment_ids)
    _, scored = seq.title_masks(
        decoded.index.labels, decoded.index.mask, decoded.end
    )
    tokens = ops.where(scored, decoded.index.labels, -1)
    tokens = ops.reshape(tokens, (-1, k, ops.shape(tokens)[-1]))
    same = ops.all(ops.equal(tokens[:, :, None], tokens[:, None, :]), -1)
    earlier = ops.arange(k)[None, :] < ops.arange(k)[:, None]
    return ~ops.any(same & earlier[None], axis=-1)


@dataclasses.dataclass
class Oracle(Baseline):
    """Oracle word sampling (Zhang, Feng, Meng, You & Liu, ACL 2019,
    "Bridging the Gap between Training and Inference for Neural Machine
    Translation").

    Each title position reads, with probability p (the schedule of
    `scheduled`: `schedule`, default the paper's inverse sigmoid
    k / (k + exp(i / k)) for the gold's share, over optimizer steps i),
    an oracle word instead of the reference token; the loss is the
    cross-entropy against the reference, through one training pass over
    what was read.

    `level='word'`: the oracle word at a position is the model's own
    choice given everything read before it (reference or oracle words),
    argmax(logits + Gumbel noise), decoded in the step one position after
    the other; `temperature` τ scales the noise (argmax(logits/τ + G),
    a draw from softmax(logits/τ); 0: greedy). `level='sentence'`: the
    oracle sentence is the best of `candidates` titles decoded with that
    noise and forced to the reference's length, by sentence BLEU against
    the reference (`models/rewards.py`); its words are read where chosen.
    Logs `sampling_rate` (p) and, at the sentence level, `oracle_bleu`.
    """

    name: ClassVar[str] = "oracle"
    metric_names: ClassVar[tuple] = ("sampling_rate", "oracle_bleu")
    level: str = "word"
    temperature: float = 1.0
    candidates: int = 4
    schedule: str = "inverse_sigmoid"
    k: float = 1000.0
    c: float = 5e-5
    epsilon_min: float = 0.5
    decay: float = 0.9999
    rate: float = 0.5
    max_rate: float = 1.0

    def __post_init__(self):
        check_choice("level", self.level, ("word", "sentence"))
        if self.level == "word":
            self.metric_names = ("sampling_rate",)
        check_not_negative("temperature", self.temperature)
        self.candidates = check_count("candidates", self.candidates)
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("epsilon_min", "rate", "max_rate"):
            check_rate(name, getattr(self, name))
        check_not_negative("c", self.c)
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")
        if self.k < 1.0:
            raise ValueError(f"k must be at least 1, got {self.k}")

    def rate_at(self, step):
        """p, the oracle's share, at optimizer step `step`."""
        return sampling_rate(
            step,
            self.schedule,
            c=self.c,
            epsilon_min=self.epsilon_min,
            decay=self.decay,
            k=self.k,
            rate=self.rate,
            max_rate=self.max_rate,
        )

    def loss(self, trainer, batch):
        rate = self.rate_at(trainer.optimizer.iterations)
        coins = seq.uniforms_like(batch.token_ids, trainer.seed_generator)
        title = target_positions(batch.token_ids, batch.segment_ids)
        chosen = title & (coins < rate)
        figures = {"sampling_rate": rate}
        if self.level == "word":
            inputs = self.word_oracle(trainer, batch, chosen)
        else:
            oracle, figures["oracle_bleu"] = self.sentence_oracle(
                trainer, batch
            )
            inputs = ops.where(chosen, oracle, batch.inputs)
        batch = batch._replace(inputs=ops.stop_gradient(inputs))
        return trainer.cross_entropy(batch), figures

    def word_oracle(self, trainer, batch, chosen):
        uniforms = seq.uniforms_like(batch.token_ids, trainer.seed_generator)
        return seq.decode(
            trainer.network,
            batch.inputs,
            batch.segment_ids,
            uniforms,
            self.temperature,
            keep=~chosen,
        )

    def sentence_oracle(self, trainer, batch):
        """(the best candidate's token ids, its mean BLEU over rows)."""
        k = self.candidates
        token_ids = seq.repeat_rows(batch.token_ids, k)
        segments = seq.repeat_rows(batch.segment_ids, k)
        uniforms = seq.uniforms_like(token_ids, trainer.seed_generator)
        candidates = seq.decode(
            trainer.network,
            token_ids,
            segments,
            uniforms,
            self.temperature,
            force_length=True,
        )
        reference = seq.title_index(trainer, token_ids, segments)
        decoded = seq.title_index(trainer, candidates, segments)
        scores = ops.reshape(
            seq.title_rewards("bleu", decoded, reference), (-1, k)
        )
        best = ops.cast(ops.argmax(scores, axis=-1), "int32")
        length = ops.shape(candidates)[-1]
        grouped = ops.reshape(candidates, (-1, k, length))
        picked = ops.take_along_axis(grouped, best[:, None, None], axis=1)
        rows = ops.cast(
            ops.any(
                target_positions(batch.token_ids, batch.segment_ids), axis=1
            ),
            "float32",
        )
        return picked[:, 0], seq.row_mean(ops.max(scores, axis=-1), rows)
