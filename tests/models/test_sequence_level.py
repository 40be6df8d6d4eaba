"""Sequence-level strategies (`scst`, `mrt`, `oracle`) and their rewards.

The rewards on token ids equal the toolkit's scorer on the same titles.
Each loss and its gradient equal their formula on a hand-built policy
(`PositionPolicy`: the logits of a position are a table row, so every
probability is known), with titles drawn from chosen uniforms; the
REINFORCE gradient of `scst`, averaged over every title by its
probability, is the gradient of the expected reward. The in-step decoding
equals step-by-step decoding with the real model.
"""

import itertools
import math
import types
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from models import backend
from models import rewards
from models import sequence_level
from models import strategies
from models import targets
from models.bert import BertNetwork
from models.professor import free_run_inputs
from models.strategies.base import Batch
from models.targets import token_cross_entropy
from tasks.lib.metrics import score_titles
from tests.common import mixed_batch
from tests.common import trainer_model as tiny_model

# Ids of the hand-built case: [PAD] [UNK] [CLS] [SEP], then two words.
SEP, A, B = 3, 4, 5
CHARACTERS = {A: "甲", B: "乙"}
VOCAB = 6
# Tokens the policy never picks (e^-30 of the mass).
FORBIDDEN = np.array([-30.0, -30.0, -30.0, 0.0, 0.0, 0.0])


def text(tokens) -> str:
    """A title's characters, up to its first end token."""
    out = []
    for token in tokens:
        if token == SEP:
            break
        out.append(CHARACTERS[int(token)])
    return "".join(out)


def toolkit_score(metric, prediction, reference) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score_titles([prediction], [reference])[metric]


# Rewards ---------------------------------------------------------------------


def encoded(texts, alphabet, width):
    ids = np.full((len(texts), width), SEP, "int32")
    mask = np.zeros((len(texts), width), bool)
    for row, title in enumerate(texts):
        ids[row, : len(title)] = [alphabet.index(ch) + 10 for ch in title]
        mask[row, : len(title)] = True
    return ids, mask


@pytest.mark.parametrize("metric", rewards.REWARDS)
def test_rewards_equal_the_toolkit_scorer(metric):
    """Random titles over four characters (repeats exercise the LCS tie
    rule and the n-gram clipping), empty predictions included."""
    rng = np.random.default_rng(0)
    alphabet = "甲乙丙丁"
    pairs = [
        (
            "".join(rng.choice(list(alphabet), rng.integers(0, 10))),
            "".join(rng.choice(list(alphabet), rng.integers(1, 10))),
        )
        for _ in range(200)
    ]
    hyp, hyp_mask = encoded([p for p, _ in pairs], alphabet, 12)
    ref, ref_mask = encoded([r for _, r in pairs], alphabet, 9)
    got = ops.convert_to_numpy(
        rewards.score(metric, hyp, hyp_mask, ref, ref_mask)
    )
    expected = [toolkit_score(metric, p, r) for p, r in pairs]
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert len(set(np.round(expected, 6))) >= 10


def test_unknown_reward_is_refused():
    with pytest.raises(ValueError, match="reward must be one of"):
        rewards.score("meteor", *encoded(["甲"], "甲", 2) * 2)


# The hand-built policy -------------------------------------------------------


class PositionPolicy:
    """A network whose logits at position p are `table[p]` (plus the
    forbidden tokens' -30), whatever it reads: every title's probability
    is a product of known factors."""

    def __init__(self, table):
        self.table = keras.Variable(np.asarray(table, "float32"))

    def __call__(self, inputs, segment_ids, training=False, output="hidden"):
        length = ops.shape(inputs)[1]
        eye = ops.eye(length, dtype="float32")[None]
        return ops.zeros_like(ops.cast(inputs, "float32"))[..., None] + eye

    def mlm_logits(self, hidden):
        return ops.matmul(hidden, self.table) + FORBIDDEN


class PolicyTrainer:
    """What the strategies read of a trainer, over a `PositionPolicy`;
    keeps the inputs of the last cross-entropy pass (`fed`)."""

    def __init__(self, strategy, network, step=0):
        self.strategy, self.network = strategy, network
        self.max_targets = 4
        self.seed_generator = keras.random.SeedGenerator(0)
        self.optimizer = types.SimpleNamespace(iterations=step)
        self.fed = None

    def head_at_targets(self, batch, hidden, index=None):
        if index is None:
            index = targets.target_index(
                batch.token_ids, batch.segment_ids, self.max_targets
            )
        logits = self.network.mlm_logits(targets.gather(hidden, index))
        return logits, index.labels, index.mask

    def cross_entropy(self, batch):
        self.fed = batch.inputs
        hidden = self.network(batch.inputs, batch.segment_ids)
        logits, labels, mask = self.head_at_targets(batch, hidden)
        return token_cross_entropy(labels, logits, mask)


# [CLS] a [SEP] | a b [SEP]: title positions 3, 4, 5, read from 2, 3, 4.
TOKENS = np.array([[2, A, SEP, A, B, SEP]], "int32")
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1]], "int32")
TITLE = (3, 4, 5)
REFERENCE = "甲乙"


def policy_table(seed=0):
    return np.random.default_rng(seed).normal(0, 1, (6, VOCAB))


def probabilities(table):
    """p[t]: the distribution of the token at title position t."""
    logits = np.asarray(table, "float64") + FORBIDDEN
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    probs = exp / exp.sum(-1, keepdims=True)
    return {t: probs[t - 1] for t in TITLE}


def forcing(titles, width=6):
    """Uniforms that make the inverse-CDF draw pick `titles` (each a token
    per title position): the middle of each token's interval."""
    table = policy_table()
    probs = probabilities(table)
    uniforms = np.full((len(titles), width), 0.5, "float32")
    for row, title in enumerate(titles):
        for t, token in zip(TITLE, title):
            cdf = np.cumsum(probs[t])
            low = cdf[token - 1] if token else 0.0
            uniforms[row, t] = (low + cdf[token]) / 2 / cdf[-1]
    return uniforms


def log_prob(probs, title) -> float:
    """log p of a title up to and including its first end token."""
    total = 0.0
    for t, token in zip(TITLE, title):
        total += math.log(probs[t][token])
        if token == SEP:
            break
    return total


def cross_entropy(probs) -> float:
    gold = TOKENS[0, list(TITLE)]
    return -np.mean([math.log(probs[t][y]) for t, y in zip(TITLE, gold)])


def gradient(fn, table, step=1e-4):
    """Central finite differences of a float64 function of the table."""
    grad = np.zeros_like(table)
    for index in np.ndindex(*table.shape):
        up, down = table.copy(), table.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (fn(up) - fn(down)) / (2 * step)
    return grad


def loss_and_grad(strategy, table, uniforms, monkeypatch, step=0):
    """The strategy's objective, figures and d objective / d table on the
    hand-built batch, the draws given by `uniforms` (a list, in order)."""
    queue = list(uniforms)
    monkeypatch.setattr(
        sequence_level, "uniforms_like", lambda ids, seed: queue.pop(0)
    )
    network = PositionPolicy(table)
    trainer = PolicyTrainer(strategy, network, step)
    batch = Batch(TOKENS, SEGMENTS, TOKENS)

    def objective():
        queue[:] = list(uniforms)
        return strategy.loss(trainer, batch)[0]

    _, grad = backend.value_and_grad(objective, network.table, [network.table])
    # Once more outside the gradient, for the figures and what was fed.
    queue[:] = list(uniforms)
    value, figures = strategy.loss(trainer, batch)
    trainer.fed = ops.convert_to_numpy(trainer.fed)
    figures = {k: float(ops.convert_to_numpy(v)) for k, v in figures.items()}
    return float(value), ops.convert_to_numpy(grad), figures, trainer


# scst ------------------------------------------------------------------------


@pytest.mark.parametrize("metric", rewards.REWARDS)
def test_scst_loss_and_gradient_equal_the_formula(metric, monkeypatch):
    sample = (B, A, SEP)
    table = policy_table()
    strategy = strategies.get("scst", reward=metric, weight=0.7)
    value, grad, figures, _ = loss_and_grad(
        strategy, table, [forcing([sample])], monkeypatch
    )

    def formula(table):
        probs = probabilities(table)
        greedy = [int(np.argmax(probs[t])) for t in TITLE]
        reward = toolkit_score(metric, text(sample), REFERENCE)
        baseline = toolkit_score(metric, text(greedy), REFERENCE)
        advantage = reward - baseline
        reinforce = -advantage * log_prob(probs, sample)
        return 0.3 * cross_entropy(probs) + 0.7 * reinforce

    assert value == pytest.approx(formula(table), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad, gradient(formula, table), atol=2e-5)
    assert figures["reward"] == pytest.approx(
        toolkit_score(metric, "乙甲", REFERENCE), abs=1e-6
    )


@pytest.mark.slow
def test_scst_gradient_in_expectation_is_the_expected_reward_gradient(
    monkeypatch,
):
    """Σ_w p(w)·∇L_rl(w) over all 27 titles = -∇ E_w[ROUGE-L(w)]: the
    greedy baseline changes no expectation."""
    table = policy_table()
    strategy = strategies.get("scst", weight=1.0)
    probs = probabilities(table)
    titles = list(itertools.product((SEP, A, B), repeat=3))
    average = np.zeros_like(table)
    for title in titles:
        _, grad, _, _ = loss_and_grad(
            strategy, table, [forcing([title])], monkeypatch
        )
        weight = np.prod([probs[t][token] for t, token in zip(TITLE, title)])
        average += weight * grad

    def expected_reward(table):
        probs = probabilities(table)
        return sum(
            np.prod([probs[t][token] for t, token in zip(TITLE, title)])
            * toolkit_score("rouge-l", text(title), REFERENCE)
            for title in titles
        )

    np.testing.assert_allclose(
        average, -gradient(expected_reward, table), atol=2e-5
    )
    assert np.abs(average).max() > 1e-2


def test_scst_mle_share_anneals_as_mixer():
    strategy = strategies.get("scst", weight=0.8, anneal_steps=10)
    shares = [float(strategy.mle_share(step)) for step in (0, 5, 10, 20)]
    np.testing.assert_allclose(shares, [1.0, 0.6, 0.2, 0.2], rtol=1e-6)
    assert float(strategies.get("scst", weight=0.8).mle_share(0)) == (
        pytest.approx(0.2)
    )


# mrt -------------------------------------------------------------------------


@pytest.mark.parametrize("metric", rewards.REWARDS)
def test_mrt_loss_and_gradient_equal_the_formula(metric, monkeypatch):
    """Three candidates, two of them the same title (counted once)."""
    candidates = [(A, B, SEP), (B, SEP, A), (A, B, SEP)]
    table = policy_table()
    strategy = strategies.get(
        "mrt", reward=metric, candidates=3, sharpness=0.5, weight=0.6
    )
    value, grad, figures, _ = loss_and_grad(
        strategy, table, [forcing(candidates)], monkeypatch
    )

    def formula(table):
        probs = probabilities(table)
        distinct = candidates[:2]
        scores = np.array([0.5 * log_prob(probs, y) for y in distinct])
        q = np.exp(scores - scores.max())
        q /= q.sum()
        risks = [
            1 - toolkit_score(metric, text(y), REFERENCE) for y in distinct
        ]
        return 0.4 * cross_entropy(probs) + 0.6 * float(q @ risks)

    assert value == pytest.approx(formula(table), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad, gradient(formula, table), atol=2e-5)
    mean = np.mean(
        [toolkit_score(metric, text(y), REFERENCE) for y in candidates]
    )
    assert figures["reward"] == pytest.approx(mean, abs=1e-6)


# oracle ----------------------------------------------------------------------


def test_oracle_word_level_feeds_the_model_draw_where_chosen(monkeypatch):
    """Coins pick positions 3 and 5; there the pass reads the policy's
    draw from the uniforms, elsewhere the reference."""
    coins = np.full((1, 6), 0.9, "float32")
    coins[0, [3, 5]] = 0.0
    draws = forcing([(B, A, A)])
    table = policy_table()
    strategy = strategies.get("oracle", schedule="constant", rate=0.5)
    value, grad, figures, trainer = loss_and_grad(
        strategy, table, [coins, draws], monkeypatch
    )
    np.testing.assert_array_equal(trainer.fed, [[2, A, SEP, B, B, A]])
    assert figures["sampling_rate"] == pytest.approx(0.5)
    # The policy's outputs do not depend on what it reads: the plain CE.
    assert value == pytest.approx(cross_entropy(probabilities(table)), 1e-5)
    np.testing.assert_allclose(
        grad,
        gradient(lambda t: cross_entropy(probabilities(t)), table),
        atol=2e-5,
    )


def test_oracle_sentence_level_feeds_the_best_candidate_by_bleu(monkeypatch):
    """Candidates are forced to the reference's length (the end token only
    last); the best by sentence BLEU is read where the coins say."""
    candidates = [(B, B, SEP), (A, B, SEP), (B, A, SEP)]
    coins = np.zeros((1, 6), "float32")
    coins[0, 4] = 0.9
    table = policy_table()
    strategy = strategies.get(
        "oracle", level="sentence", candidates=3, schedule="constant"
    )
    _, _, figures, trainer = loss_and_grad(
        strategy, table, [coins, forcing(candidates)], monkeypatch
    )
    best = max(candidates, key=lambda y: toolkit_score("bleu", text(y), "甲乙"))
    assert best == (A, B, SEP)
    np.testing.assert_array_equal(trainer.fed, [[2, A, SEP, A, B, SEP]])
    assert figures["oracle_bleu"] == pytest.approx(
        toolkit_score("bleu", "甲乙", REFERENCE), abs=1e-6
    )
    # An end token drawn early is replaced: the title keeps its length.
    _, _, _, trainer = loss_and_grad(
        strategy, table, [coins, forcing([(SEP, B, A)] * 3)], monkeypatch
    )
    assert trainer.fed[0, 3] != SEP and trainer.fed[0, 5] == SEP


def test_oracle_rate_is_the_papers_decay():
    strategy = strategies.get("oracle", k=12.0)
    for step in (0, 10, 40):
        teacher = 12.0 / (12.0 + math.exp(step / 12.0))
        assert float(strategy.rate_at(step)) == pytest.approx(1 - teacher)


@pytest.mark.parametrize(
    "name, options",
    [
        ("scst", dict(reward="rouge")),
        ("scst", dict(weight=1.5)),
        ("scst", dict(anneal_steps=-1)),
        ("mrt", dict(candidates=0)),
        ("mrt", dict(sharpness=0.0)),
        ("oracle", dict(level="phrase")),
        ("oracle", dict(temperature=-1.0)),
        ("oracle", dict(schedule="cosine")),
    ],
)
def test_options_are_checked(name, options):
    with pytest.raises(ValueError):
        strategies.get(name, **options)


# Decoding inside the step ----------------------------------------------------


def step_by_step(network, token_ids, segment_ids, keep):
    """Greedy decoding one title position at a time, in NumPy, reading
    the reference where `keep` is true."""
    inputs = np.array(token_ids)
    title = (segment_ids == 1) & (token_ids != 0)
    for column in range(inputs.shape[1]):
        for row in range(inputs.shape[0]):
            if not title[row, column] or keep[row, column]:
                continue
            hidden = network(inputs, segment_ids, output="hidden")
            logits = network.mlm_logits(hidden[:, column - 1 : column])
            inputs[row, column] = int(np.argmax(logits[row, 0]))
    return inputs


def test_decode_equals_step_by_step_decoding():
    network = BertNetwork.from_model(tiny_model(seed=3))
    token_ids, segment_ids = mixed_batch()
    keep = np.zeros_like(token_ids, bool)
    keep[:, 1::3] = True
    for kept in (np.zeros_like(keep), keep):
        got = sequence_level.decode(network, token_ids, segment_ids, keep=kept)
        expected = step_by_step(network, token_ids, segment_ids, kept)
        np.testing.assert_array_equal(ops.convert_to_numpy(got), expected)
    free = free_run_inputs(network, token_ids, segment_ids)
    greedy = sequence_level.decode(network, token_ids, segment_ids)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(greedy), ops.convert_to_numpy(free)
    )


def test_title_slots_without_max_targets_cover_the_batch():
    trainer = types.SimpleNamespace(max_targets=None)
    token_ids, segment_ids = mixed_batch()
    index = sequence_level.title_index(trainer, token_ids, segment_ids)
    assert ops.shape(index.index.labels)[1] == token_ids.shape[1] - 1
    np.testing.assert_array_equal(ops.convert_to_numpy(index.end), [3, 3, 3])
