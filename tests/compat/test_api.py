"""Every public name of bert4keras 0.11 either works or says what to use.

The names come from bert4keras 0.11.5's own sources (parsed, not run): each
function, class and module-level assignment of its six modules, plus the
Keras 2 backend functions scripts reach through `K`. Looking one up in
compat must return something or raise `UnsupportedError` with one line
naming the Keras 3 way, never an `AttributeError`.
"""

import ast
import importlib

import pytest

from compat import UnsupportedError
from compat.backend import K
from tests.compat import reference

MODULES = (
    "backend",
    "layers",
    "models",
    "tokenizers",
    "optimizers",
    "snippets",
)

# What the UniLM seq2seq examples import; these must really work.
USED_BY_EXAMPLES = {
    "backend": ["keras", "K"],
    "layers": ["Loss"],
    "models": ["build_transformer_model"],
    "tokenizers": ["Tokenizer", "load_vocab"],
    "optimizers": [
        "Adam",
        "extend_with_weight_decay",
        "extend_with_piecewise_linear_lr",
        "extend_with_gradient_accumulation",
        "extend_with_exponential_moving_average",
    ],
    "snippets": [
        "sequence_padding",
        "open",
        "DataGenerator",
        "AutoRegressiveDecoder",
        "text_segmentate",
        "truncate_sequences",
    ],
}

# Keras 2 `keras.backend` functions seen in bert4keras code and scripts.
K_FUNCTIONS = """
    abs all any arange argmax argmin batch_dot batch_flatten batch_get_value
    batch_set_value binary_crossentropy cast categorical_crossentropy clip
    concatenate constant cos count_params cumprod cumsum dot dtype elu
    epsilon equal eval exp expand_dims eye flatten floatx function gather
    get_session get_value gradients greater greater_equal in_train_phase
    int_shape is_tensor l2_normalize learning_phase less less_equal log
    logsumexp max maximum mean min minimum ndim not_equal one_hot ones
    ones_like permute_dimensions placeholder pow prod random_binomial
    random_normal random_uniform relu repeat repeat_elements reshape round
    set_value shape sigmoid sign sin softmax softplus
    sparse_categorical_crossentropy
    sqrt square squeeze stack std stop_gradient sum switch symbolic tanh
    temporal_padding tile transpose update update_add var variable where
    zeros zeros_like
""".split()


def public_names(module):
    """Top-level defs, classes and assignments of a bert4keras module."""
    path = reference.source_dir() / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names.add(target.id)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)

    visit(tree.body)
    return sorted(name for name in names if not name.startswith("_"))


def assert_works_or_explains(owner, name, label):
    try:
        value = getattr(owner, name)
    except UnsupportedError as error:
        message = str(error)
        assert "\n" not in message and name in message, message
        assert "not supported" in message and len(message) < 300, message
        return None
    assert value is not None or name == "uniout", label
    return value


@pytest.mark.parametrize("module", MODULES)
def test_every_bert4keras_name_works_or_explains(module):
    compat_module = importlib.import_module(f"compat.{module}")
    names = public_names(module)
    assert len(names) > 3
    for name in names:
        assert_works_or_explains(compat_module, name, f"{module}.{name}")


@pytest.mark.parametrize("module", MODULES)
def test_names_the_examples_import_work(module):
    compat_module = importlib.import_module(f"compat.{module}")
    for name in USED_BY_EXAMPLES[module]:
        assert getattr(compat_module, name) is not None


def test_every_keras2_backend_function_works_or_explains():
    for name in K_FUNCTIONS:
        assert_works_or_explains(K, name, f"K.{name}")
    with pytest.raises(UnsupportedError, match="keras.ops.erf"):
        K.erf
    with pytest.raises(AttributeError):
        K._private


def test_from_import_shows_the_hint():
    with pytest.raises(UnsupportedError, match="keras.optimizers.Adafactor"):
        from compat.optimizers import AdaFactor  # noqa: F401
    with pytest.raises(UnsupportedError, match="learning phase"):
        K.in_train_phase
