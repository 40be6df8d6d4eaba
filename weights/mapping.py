"""Variable names across formats, as plain tables.

Google's TF checkpoint names are the common currency: every reader in
`weights.formats` returns `{google_name: array}`, our own safetensors files
use them, and the loader maps each Keras variable to its Google name. So
there is one table Keras -> Google and one table Hugging Face -> Google,
each split in two: names outside the Transformer blocks, and names inside
block i, relative to its prefix (`Transformer-{i}-`, `encoder.layer.{i}.`,
`bert/encoder/layer_{i}/`).
"""

import re

GOOGLE_BLOCK = "bert/encoder/layer_{index}/"

KERAS_TO_GOOGLE = {
    "Embedding-Token/embeddings": "bert/embeddings/word_embeddings",
    "Embedding-Segment/embeddings": "bert/embeddings/token_type_embeddings",
    "Embedding-Position/embeddings": "bert/embeddings/position_embeddings",
    "Embedding-Norm/gamma": "bert/embeddings/LayerNorm/gamma",
    "Embedding-Norm/beta": "bert/embeddings/LayerNorm/beta",
    "MLM-Dense/kernel": "cls/predictions/transform/dense/kernel",
    "MLM-Dense/bias": "cls/predictions/transform/dense/bias",
    "MLM-Norm/gamma": "cls/predictions/transform/LayerNorm/gamma",
    "MLM-Norm/beta": "cls/predictions/transform/LayerNorm/beta",
    "MLM-Bias/bias": "cls/predictions/output_bias",
}

KERAS_BLOCK_TO_GOOGLE = {
    "MultiHeadSelfAttention/query/kernel": "attention/self/query/kernel",
    "MultiHeadSelfAttention/query/bias": "attention/self/query/bias",
    "MultiHeadSelfAttention/key/kernel": "attention/self/key/kernel",
    "MultiHeadSelfAttention/key/bias": "attention/self/key/bias",
    "MultiHeadSelfAttention/value/kernel": "attention/self/value/kernel",
    "MultiHeadSelfAttention/value/bias": "attention/self/value/bias",
    "MultiHeadSelfAttention/output/kernel": "attention/output/dense/kernel",
    "MultiHeadSelfAttention/output/bias": "attention/output/dense/bias",
    "MultiHeadSelfAttention-Norm/gamma": "attention/output/LayerNorm/gamma",
    "MultiHeadSelfAttention-Norm/beta": "attention/output/LayerNorm/beta",
    "FeedForward/intermediate/kernel": "intermediate/dense/kernel",
    "FeedForward/intermediate/bias": "intermediate/dense/bias",
    "FeedForward/output/kernel": "output/dense/kernel",
    "FeedForward/output/bias": "output/dense/bias",
    "FeedForward-Norm/gamma": "output/LayerNorm/gamma",
    "FeedForward-Norm/beta": "output/LayerNorm/beta",
}

# Hugging Face names without the `bert.` prefix that BertForMaskedLM adds to
# BertModel's names; `_hf_key` strips it and renames the LayerNorm
# `gamma`/`beta` of old checkpoints to `weight`/`bias` first.
HF_TO_GOOGLE = {
    "embeddings.word_embeddings.weight": "bert/embeddings/word_embeddings",
    "embeddings.token_type_embeddings.weight": (
        "bert/embeddings/token_type_embeddings"
    ),
    "embeddings.position_embeddings.weight": (
        "bert/embeddings/position_embeddings"
    ),
    "embeddings.LayerNorm.weight": "bert/embeddings/LayerNorm/gamma",
    "embeddings.LayerNorm.bias": "bert/embeddings/LayerNorm/beta",
    "cls.predictions.transform.dense.weight": (
        "cls/predictions/transform/dense/kernel"
    ),
    "cls.predictions.transform.dense.bias": (
        "cls/predictions/transform/dense/bias"
    ),
    "cls.predictions.transform.LayerNorm.weight": (
        "cls/predictions/transform/LayerNorm/gamma"
    ),
    "cls.predictions.transform.LayerNorm.bias": (
        "cls/predictions/transform/LayerNorm/beta"
    ),
    "cls.predictions.bias": "cls/predictions/output_bias",
}

HF_BLOCK_TO_GOOGLE = {
    "attention.self.query.weight": "attention/self/query/kernel",
    "attention.self.query.bias": "attention/self/query/bias",
    "attention.self.key.weight": "attention/self/key/kernel",
    "attention.self.key.bias": "attention/self/key/bias",
    "attention.self.value.weight": "attention/self/value/kernel",
    "attention.self.value.bias": "attention/self/value/bias",
    "attention.output.dense.weight": "attention/output/dense/kernel",
    "attention.output.dense.bias": "attention/output/dense/bias",
    "attention.output.LayerNorm.weight": "attention/output/LayerNorm/gamma",
    "attention.output.LayerNorm.bias": "attention/output/LayerNorm/beta",
    "intermediate.dense.weight": "intermediate/dense/kernel",
    "intermediate.dense.bias": "intermediate/dense/bias",
    "output.dense.weight": "output/dense/kernel",
    "output.dense.bias": "output/dense/bias",
    "output.LayerNorm.weight": "output/LayerNorm/gamma",
    "output.LayerNorm.bias": "output/LayerNorm/beta",
}

# The same tables read the other way, with BertForMaskedLM's `bert.` prefix
# on the encoder's names.
_GOOGLE_TO_HF = {
    google: name if name.startswith("cls.") else f"bert.{name}"
    for name, google in HF_TO_GOOGLE.items()
}
_GOOGLE_BLOCK_TO_HF = {
    google: name for name, google in HF_BLOCK_TO_GOOGLE.items()
}

# Rows of these follow the vocabulary, so `keep_tokens` slices them.
VOCAB_ROWS = ("bert/embeddings/word_embeddings", "cls/predictions/output_bias")

# Pretraining checkpoints ship an MLM head without this bias now and then
# (bert4keras#265); zeros are a fine start, so it is optional.
OPTIONAL = ("cls/predictions/output_bias",)

# Training state saved beside the weights by Google's and HFL's optimizers.
_OPTIMIZER_SLOT = re.compile(
    r"(/adam_[mv]$|/Adam(_1)?$|/lamb_[mv]$|^global_step$"
    r"|(^|/)(good_steps|bad_steps|loss_scale)$)"
)


def _lookup(name, table, block_table, block_prefix):
    """Look `name` up in `table`, or in `block_table` inside a block."""
    match = re.match(block_prefix, name)
    if match is None:
        return table.get(name)
    inner = block_table.get(name[match.end() :])
    if inner is None:
        return None
    return GOOGLE_BLOCK.format(index=match.group(1)) + inner


def keras_to_google(path: str) -> str | None:
    """The Google name of a Keras variable path, None if it has none."""
    return _lookup(
        path, KERAS_TO_GOOGLE, KERAS_BLOCK_TO_GOOGLE, r"Transformer-(\d+)-"
    )


def keras_variables_of(layer: str) -> list[str]:
    """The variable paths of one layer, in the order it creates them.

    `layer` is a layer path (`Embedding-Norm`,
    `Transformer-0-MultiHeadSelfAttention/query`); the tables list each
    layer's variables in creation order. Empty for an unknown layer.
    """
    match = re.match(r"Transformer-(\d+)-", layer)
    table = KERAS_TO_GOOGLE if match is None else KERAS_BLOCK_TO_GOOGLE
    prefix = "" if match is None else match.group(0)
    inner = layer.removeprefix(prefix)
    return [prefix + path for path in table if path.rsplit("/", 1)[0] == inner]


def google_to_hf(name: str) -> str | None:
    """The BertForMaskedLM name of a Google name, None if it has none
    (the pooler and the next-sentence head: BertForMaskedLM has neither).
    Kernels are transposed on the way (`hf_is_transposed`)."""
    match = re.match(r"bert/encoder/layer_(\d+)/", name)
    if match is None:
        return _GOOGLE_TO_HF.get(name)
    inner = _GOOGLE_BLOCK_TO_HF.get(name[match.end() :])
    if inner is None:
        return None
    return f"bert.encoder.layer.{match.group(1)}.{inner}"


def hf_to_google(name: str) -> str | None:
    """The Google name of a Hugging Face tensor name, None if unknown.

    Accepts BertModel names (`embeddings...`) and BertForMaskedLM names
    (`bert.embeddings...`, `cls.predictions...`; RoFormerForMaskedLM's
    `roformer.embeddings...`), with LayerNorm parameters
    called `weight`/`bias` or, in old checkpoints, `gamma`/`beta`.
    """
    return _lookup(
        _hf_key(name),
        HF_TO_GOOGLE,
        HF_BLOCK_TO_GOOGLE,
        r"encoder\.layer\.(\d+)\.",
    )


# The encoder's prefix in each family's *ForMaskedLM: their names below
# it are BertModel's (RoFormer's add no position embeddings).
_HF_PREFIX = re.compile(r"^(bert|roformer|nezha)\.")


def _hf_key(name):
    name = _HF_PREFIX.sub("", name)
    if ".LayerNorm." in name:
        name = re.sub(r"\.gamma$", ".weight", name)
        name = re.sub(r"\.beta$", ".bias", name)
    return name


def hf_is_transposed(google_name: str) -> bool:
    """torch.nn.Linear stores (out, in); Google's kernels are (in, out)."""
    return google_name.endswith("/kernel")


def is_optimizer_slot(name: str) -> bool:
    """True for optimizer state (Adam moments, LAMB, step counters)."""
    return _OPTIMIZER_SLOT.search(name) is not None
