"""Whole models saved and loaded the bert4keras way, after the rewrite.

A bert4keras script saves its training model (the UniLM model behind a
`Loss` layer, compiled) with `model.save(...)` and reloads it with
`keras.models.load_model`. Keras 3 writes whole models to `.keras` files
only (a suffix-less name is an error and `.h5` can no longer hold such a
model), so the documented rewrite renames those files; compat's
optimizers are registered, so the model comes back compiled, state and
all.
"""

import json
import runpy

import keras
import numpy as np
import pytest

from compat.layers import Loss
from compat.models import build_transformer_model
from compat.optimizers import Adam
from compat.optimizers import extend_with_exponential_moving_average
from compat.optimizers import extend_with_gradient_accumulation
from compat.optimizers import extend_with_piecewise_linear_lr
from compat.optimizers import extend_with_weight_decay
from tests.common import ROOT
from tests.common import TINY_TRAINER
from tests.compat.scripts import documented_rewrite
from tests.compat.scripts import port_text
from tests.compat.scripts import set_values


class CrossEntropy(Loss):
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        loss = keras.ops.sparse_categorical_crossentropy(
            y_true[:, 1:], y_pred[:, :-1]
        )
        y_mask = y_mask[:, 1:]
        return keras.ops.sum(loss * y_mask) / keras.ops.sum(y_mask)


def batch():
    token_ids = np.array([[2, 5, 6, 3, 7, 8, 3], [2, 9, 3, 4, 3, 0, 0]])
    segment_ids = np.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
    return [token_ids.astype("int32"), segment_ids.astype("int32")]


def training_model(optimizer):
    """A compiled training model whose optimizer holds some state.

    The state is drawn, not trained: a first training step takes seconds
    to trace, and what is checked is that every slot comes back.
    """
    keras.utils.set_random_seed(0)
    model = build_transformer_model(
        dict(TINY_TRAINER, vocab_size=12), application="unilm"
    )
    output = CrossEntropy(2)(model.inputs + model.outputs)
    model = keras.Model(model.inputs, output)
    model.compile(optimizer=optimizer)
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    for variable in model.optimizer.variables:
        value = rng.integers(1, 5, variable.shape)
        variable.assign(value.astype(variable.dtype))
    return model


def stacked_optimizer():
    AdamW = extend_with_weight_decay(Adam, "AdamW")
    AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    AdamGA = extend_with_gradient_accumulation(AdamWLR, "AdamGA")
    AdamEMA = extend_with_exponential_moving_average(AdamGA, "AdamEMA")
    return AdamEMA(
        learning_rate=1e-3,
        weight_decay_rate=0.01,
        exclude_from_weight_decay=["Norm", "bias"],
        lr_schedule={2: 1, 100: 0.1},
        grad_accum_steps=1,
        ema_momentum=0.9,
    )


@pytest.mark.parametrize(
    "make", [lambda: Adam(1e-3), stacked_optimizer], ids=["adam", "stacked"]
)
def test_compiled_model_comes_back_compiled(make, tmp_path):
    model = training_model(make())
    path = tmp_path / "best_model.keras"
    model.save(path)
    loaded = keras.models.load_model(
        path, custom_objects={"CrossEntropy": CrossEntropy}
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(batch())),
        keras.ops.convert_to_numpy(model(batch())),
        rtol=0,
        atol=1e-6,
    )
    theirs, ours = loaded.optimizer, model.optimizer
    assert type(theirs).__name__ == type(ours).__name__
    assert theirs.get_config() == ours.get_config()
    assert len(theirs.variables) == len(ours.variables) > 2
    for got, want in zip(theirs.variables, ours.variables):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


# A bert4keras script's whole-model saves, as Keras 2 allowed them.
SCRIPT = """\
import numpy as np
from bert4keras.backend import keras, K
from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import Adam
from keras.models import Model

config_path = '/root/bert/bert_config.json'


class CrossEntropy(Loss):
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = y_mask[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


model = build_transformer_model(config_path, application='unilm')
output = CrossEntropy(2)(model.inputs + model.outputs)
model = Model(model.inputs, output)
model.compile(optimizer=Adam(1e-3))

token_ids = np.array([[2, 5, 6, 3, 7, 8, 3], [2, 9, 3, 4, 3, 0, 0]])
segment_ids = np.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
model.fit([token_ids, segment_ids], None, epochs=2, verbose=0)
np.save('inputs', token_ids)

model.save('best_model.h5')
model.save('./saved_model')
model.save("last_model.weights")
model.save_weights('./best_model.weights')

custom_objects = {'CrossEntropy': CrossEntropy}
restored = [
    keras.models.load_model('best_model.h5', custom_objects=custom_objects),
    keras.models.load_model('./saved_model', custom_objects=custom_objects),
    keras.models.load_model("last_model.weights", compile=False,
                            custom_objects=custom_objects),
]
outputs = [m.predict([token_ids, segment_ids]) for m in [model] + restored]
"""


def test_readme_shows_the_documented_rewrite():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert [line for line in readme if line.startswith("sed ")] == [
        documented_rewrite()
    ]


def test_rewrite_names_whole_model_files_keras(tmp_path):
    text = port_text(SCRIPT, tmp_path / "whole.py").read_text("utf-8")
    for expected in [
        "model.save('best_model.keras')",
        "model.save('./saved_model.keras')",
        'model.save("last_model.keras")',
        "model.save_weights('./best_model.weights.h5')",
        "load_model('best_model.keras', custom_objects",
        "load_model('./saved_model.keras', custom_objects",
        'load_model("last_model.keras", compile=False',
        "np.save('inputs', token_ids)",  # NumPy's file: left alone
    ]:
        assert expected in text


@pytest.mark.slow
def test_ported_script_saves_and_loads_whole_models(tmp_path, monkeypatch):
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(dict(TINY_TRAINER, vocab_size=12)))
    script = port_text(SCRIPT, tmp_path / "whole.py")
    set_values(script, [(r"'/root/bert/bert_config\.json'", repr(str(config)))])
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    g = runpy.run_path(str(script), run_name="__main__")
    for name in ("best_model.keras", "saved_model.keras", "last_model.keras"):
        assert (tmp_path / name).is_file()
    trained, *restored = g["outputs"]
    assert trained.shape == (2, 7, 12)
    for outputs in restored:
        np.testing.assert_allclose(outputs, trained, rtol=0, atol=1e-6)
    assert type(g["restored"][0].optimizer).__name__ == "Adam"
