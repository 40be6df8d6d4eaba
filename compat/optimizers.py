"""bert4keras.optimizers on Keras 3 optimizers.

`Adam` and `Lion` are Keras 3's with bert4keras's defaults. Each
`extend_with_*(BaseOptimizer, name=None)` returns a subclass taking
bert4keras's extra arguments and handing them to what Keras 3 optimizers
already do:

| bert4keras                                   | Keras 3                       |
| -------------------------------------------- | ----------------------------- |
| weight_decay(weight_decay_rate, exclude_...) | `weight_decay` (decoupled)    |
| piecewise_linear_lr(lr_schedule)             | a `LearningRateSchedule`      |
| gradient_accumulation(grad_accum_steps)      | `gradient_accumulation_steps` |
| exponential_moving_average(ema_momentum)     | `use_ema`, `ema_momentum`     |

They stack as in bert4keras, e.g.
`extend_with_piecewise_linear_lr(extend_with_weight_decay(Adam))`. The
`_v2` names (bert4keras's tf.keras variants) are the same functions. Other
bert4keras optimizers raise an error naming the Keras 3 way.

Every optimizer class here, and each class an `extend_with_*` makes, is
registered with Keras (bert4keras put them in Keras's custom objects), so
that a model compiled with one saves to `.keras` and loads back compiled,
its optimizer's state included.
"""

import re

import keras
from keras import ops

from compat._unsupported import module_getattr
from compat._unsupported import unsupported
from compat.backend import piecewise_linear

__all__ = [
    "Adam",
    "Lion",
    "PiecewiseLinearSchedule",
    "extend_with_exponential_moving_average",
    "extend_with_exponential_moving_average_v2",
    "extend_with_gradient_accumulation",
    "extend_with_gradient_accumulation_v2",
    "extend_with_piecewise_linear_lr",
    "extend_with_piecewise_linear_lr_v2",
    "extend_with_weight_decay",
    "extend_with_weight_decay_v2",
]


serializable = keras.saving.register_keras_serializable(package="compat")


@serializable
class Adam(keras.optimizers.Adam):
    """bert4keras's Adam: Keras 3's, with epsilon 1e-6 and `lr` accepted.

    Keras 3 adds epsilon after the bias correction of the second moment,
    bert4keras before it; the steps differ by at most a relative 1e-3 of
    epsilon's effect. Turning the bias correction off is not offered.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        bias_correction=True,
        **kwargs,
    ):
        if not bias_correction:
            raise unsupported(
                "Adam(bias_correction=False)",
                "Keras 3's Adam always corrects the bias; scale the "
                "learning rate instead",
            )
        learning_rate = kwargs.pop("lr", learning_rate)
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            **kwargs,
        )


@serializable
class Lion(keras.optimizers.Lion):
    """bert4keras's Lion (same update): Keras 3's with its defaults."""

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kw):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **kw
        )


@serializable
class PiecewiseLinearSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate` times bert4keras's `piecewise_linear(step, schedule)`.

    `learning_rate` may itself be a schedule.
    """

    def __init__(self, learning_rate, schedule):
        self.learning_rate = learning_rate
        self.schedule = {int(step): value for step, value in schedule.items()}

    def __call__(self, step):
        rate = self.learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(step)
        return rate * piecewise_linear(step, self.schedule)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "schedule": self.schedule}


def _named(cls, name, base, what):
    """Name a made class as bert4keras does, and register it under it."""
    cls.__name__ = cls.__qualname__ = name or f"{base.__name__}{what}"
    return serializable(cls)


def extend_with_weight_decay(BaseOptimizer, name=None):
    """bert4keras's AdamW: `weight_decay_rate`, `exclude_from_weight_decay`.

    Keras 3 applies the decay as bert4keras does (decoupled, times the
    learning rate). Exclusion patterns are matched with `re.search` against
    the variable's path (`Transformer-0-FeedForward-Norm/gamma`), the
    counterpart of the TensorFlow 1 names bert4keras matched.
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(
            self,
            *args,
            weight_decay_rate=0.01,
            exclude_from_weight_decay=(),
            **kwargs,
        ):
            super().__init__(*args, weight_decay=weight_decay_rate, **kwargs)
            self.weight_decay_rate = weight_decay_rate
            self.weight_decay_exclusions = list(exclude_from_weight_decay)

        def build(self, variables):
            excluded = [
                v
                for v in variables
                if any(
                    re.search(p, v.path) for p in self.weight_decay_exclusions
                )
            ]
            self.exclude_from_weight_decay(var_list=excluded)
            super().build(variables)

        def get_config(self):
            config = super().get_config()
            config.pop("weight_decay", None)
            config["weight_decay_rate"] = self.weight_decay_rate
            config["exclude_from_weight_decay"] = self.weight_decay_exclusions
            return config

    return _named(NewOptimizer, name, BaseOptimizer, "W")


def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """bert4keras's `lr_schedule={step: multiplier}` as a Keras schedule."""

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.lr_schedule = {
                int(k): v for k, v in (lr_schedule or {0: 1}).items()
            }
            rate = self._learning_rate
            if isinstance(rate, keras.Variable):
                rate = float(ops.convert_to_numpy(rate))
            self.learning_rate = PiecewiseLinearSchedule(rate, self.lr_schedule)

        def get_config(self):
            config = super().get_config()
            config["learning_rate"] = keras.saving.serialize_keras_object(
                self._learning_rate.learning_rate
            )
            config["lr_schedule"] = self.lr_schedule
            return config

    return _named(NewOptimizer, name, BaseOptimizer, "LR")


def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """bert4keras's `grad_accum_steps`: one update per that many batches."""

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, grad_accum_steps=2, **kwargs):
            steps = grad_accum_steps if grad_accum_steps > 1 else None
            super().__init__(*args, gradient_accumulation_steps=steps, **kwargs)
            self.grad_accum_steps = grad_accum_steps

        def get_config(self):
            config = super().get_config()
            config.pop("gradient_accumulation_steps", None)
            config["grad_accum_steps"] = self.grad_accum_steps
            return config

    return _named(NewOptimizer, name, BaseOptimizer, "GA")


def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """bert4keras's EMA: `ema_momentum`, `apply_ema_weights()`,
    `reset_old_weights()`.

    The average is Keras 3's (`use_ema`). As in bert4keras the model keeps
    its trained weights until `apply_ema_weights()` is called: Keras's own
    swap at the end of `fit` is turned off. Keras's average starts from the
    first weights, not from zeros, so it needs no bias correction;
    `bias_correction` is accepted and has nothing to correct.
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            kwargs.pop("use_ema", None)
            super().__init__(
                *args, use_ema=True, ema_momentum=ema_momentum, **kwargs
            )
            self.old_weights = None

        @property
        def model_weights(self):
            """The variables the optimizer was built for (bert4keras name);
            Keras's own list, so that they are not tracked twice."""
            return self._trainable_variables

        def finalize_variable_values(self, var_list):
            """Keras swaps in the average after `fit`; bert4keras did not."""

        def apply_ema_weights(self, bias_correction=True):
            """Back up the model's weights, then load the averages."""
            self.old_weights = [w.numpy() for w in self.model_weights]
            super().finalize_variable_values(self.model_weights)
            for weight in self.model_weights:
                # Own buffers, not the averages': JAX may donate them.
                weight.assign(weight.numpy())

        def reset_old_weights(self):
            """Restore the weights `apply_ema_weights` backed up."""
            for weight, value in zip(self.model_weights, self.old_weights):
                weight.assign(value)

        def get_config(self):
            config = super().get_config()
            config.pop("use_ema", None)
            return config

    return _named(NewOptimizer, name, BaseOptimizer, "EMA")


extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_exponential_moving_average_v2 = (
    extend_with_exponential_moving_average
)

_UNSUPPORTED = {
    "AdaFactor": "use keras.optimizers.Adafactor",
    "AdaFactorV1": "use keras.optimizers.Adafactor",
    "AdaFactorV2": "use keras.optimizers.Adafactor",
    "AdaFactorBase": "use keras.optimizers.Adafactor",
    "LionV2": "use compat.optimizers.Lion",
    "extend_with_layer_adaptation": "use keras.optimizers.Lamb",
    "extend_with_lookahead": (
        "Keras 3 has no lookahead; average weights with "
        "extend_with_exponential_moving_average instead"
    ),
    "extend_with_lazy_optimization": (
        "Keras 3 optimizers update every variable with a gradient"
    ),
    "extend_with_parameter_wise_lr": (
        "train parts with separate optimizers in a custom train_step, or "
        "freeze layers with layer.trainable = False"
    ),
    "export_to_custom_objects": (
        "register with keras.saving.register_keras_serializable"
    ),
    "custom_objects": "use keras.saving.get_custom_objects()",
}
_UNSUPPORTED.update(
    {
        f"{name}_v2": hint
        for name, hint in _UNSUPPORTED.items()
        if name.startswith("extend_with")
    }
)

__getattr__ = module_getattr(__name__, _UNSUPPORTED)
