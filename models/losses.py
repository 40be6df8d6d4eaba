"""Means over the scored tokens of a batch, for losses beside the
cross-entropy (`models/trainer.py`): the same global-batch mean, also when
replicas each hold a part of the batch."""

from keras import ops

from models import backend


def token_mean(values, weights):
    """Mean of per-token `values` over the tokens `weights` selects, taken
    over the global batch (see `backend.replica_sum`)."""
    weights = ops.cast(weights, "float32")
    count = backend.replica_sum(ops.sum(weights))
    # max(., 1) only matters for a batch without targets (0/0 otherwise).
    total = backend.replica_sum(ops.sum(ops.cast(values, "float32") * weights))
    return total / ops.maximum(count, 1.0)


def token_kl_divergence(p_logits, q_logits, weights):
    """KL(p ‖ q) of the next-token distributions, averaged over the tokens
    `weights` selects: Σ_v p_v·(log p_v - log q_v), from float32 logits
    (log-softmax, so that small probabilities neither underflow nor lose
    their gradient)."""
    log_p = ops.log_softmax(ops.cast(p_logits, "float32"), axis=-1)
    log_q = ops.log_softmax(ops.cast(q_logits, "float32"), axis=-1)
    divergence = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
    return token_mean(divergence, weights)
