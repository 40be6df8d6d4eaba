"""A loss that is not finite stops the run: where it happened, what to
change, and a record of it instead of scores.

Once the loss is NaN or infinite every weight it touches is too; training
on would waste the run and could make the broken model the 'best' one. The
check reads the loss Keras already returns after every step, so it costs
nothing in the compiled step.
"""

import math

import keras

from tasks.lib.cli import Diverged

# What usually brings a diverging run back.
ADVICE = "lower --lr, add warm-up ({warmup}), or train in --precision fp32"


def is_finite(value) -> bool:
    return math.isfinite(float(value))


def diverged(where: dict, loss, warmup_flag: str, kept: str) -> Diverged:
    """The one-line error of a run whose loss became `loss` at `where`
    ({'epoch': 2, 'step': 17}); `details` is what the run records (the
    loss as text: NaN is no JSON number)."""
    place = ", ".join(f"{key} {value}" for key, value in where.items())
    advice = ADVICE.format(warmup=warmup_flag)
    error = Diverged(
        f"training diverged at {place} (loss {float(loss)}): {kept}; "
        f"{advice}, and start again with another --out"
    )
    error.details = {**where, "loss": str(float(loss)), "where": place}
    return error


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop `fit` after the first step whose loss is not finite, keeping
    that step (1-based, within its epoch) and the loss."""

    def __init__(self):
        super().__init__()
        self.step = self.loss = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not is_finite(loss):
            self.step, self.loss = batch + 1, float(loss)
            self.model.stop_training = True
