"""Tiny checkpoints in the real formats, for the weights and parity tests.

Two sources of weights: a random Keras model (no torch needed) and a random
Hugging Face `BertForMaskedLM`, whose names are turned into Google's here by
the rules of Hugging Face's own TF conversion script, independently of
`weights.mapping`, so that a mistake in our tables cannot cancel itself.
"""

import contextlib
import io
import pathlib

import keras
import numpy as np
import pytest

from models import build_transformer_model
from tests.common import TINY
from weights.convert import main as convert
from weights.formats import model_arrays


def tiny_model(application="unilm", seed=0, **kwargs):
    """A tiny model with weights big enough to make outputs differ.

    BERT's init (stddev 0.02) gives near-constant outputs; these would hide
    a wrong mask or a swapped variable.
    """
    model = build_transformer_model(
        dict(TINY), application=application, **kwargs
    )
    randomize(model, seed)
    return model


def randomize(model, seed, scale=0.2):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.normal(0.0, scale, variable.shape)
        if variable.path.endswith("gamma"):
            value += 1.0
        variable.assign(value.astype("float32"))


def tiny_arrays(seed=0):
    """Google-named random weights of a tiny MLM model."""
    return model_arrays(tiny_model("unilm", seed=seed))


def have_tensorflow():
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def write_tf_checkpoint(arrays, prefix):
    """A TF checkpoint with exactly these names, as Google's BERT has."""
    tf = pytest.importorskip("tensorflow")
    names = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(arrays[name]) for name in names],
    )
    return prefix


def hf_masked_lm(seed=0):
    """A random, eval-mode Hugging Face BertForMaskedLM of TINY's shape."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        **TINY,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            value = 0.2 * torch.randn_like(parameter)
            if name.endswith("LayerNorm.weight"):
                value += 1.0
            parameter.copy_(value)
    return model


def hf_roformer_masked_lm(seed=0):
    """A random, eval-mode Hugging Face RoFormerForMaskedLM of TINY's
    shape (rotary positions on queries and keys, none on values)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.RoFormerConfig(
        **TINY,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        rotary_value=False,
    )
    model = transformers.RoFormerForMaskedLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "embed_positions" in name:
                continue  # the fixed sinusoids, not a weight
            value = 0.2 * torch.randn_like(parameter)
            if name.endswith("LayerNorm.weight"):
                value += 1.0
            parameter.copy_(value)
    return model


def hf_run(module, token_ids, segment_ids, mask):
    import torch

    with torch.no_grad():
        out = module(
            input_ids=torch.tensor(token_ids, dtype=torch.long),
            token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
        )
    return out


def unilm_mask(token_ids, segment_ids):
    """Query i sees key j iff j is a token and (j is source or j <= i)."""
    batch, length = token_ids.shape
    mask = np.full(
        (batch, 1, length, length), np.finfo("float32").min, "float32"
    )
    for n in range(batch):
        for i in range(length):
            for j in range(length):
                is_token = token_ids[n, j] != 0
                seen = segment_ids[n, j] == 0 or (
                    segment_ids[n, j] == 1 and j <= i
                )
                if is_token and seen:
                    mask[n, 0, i, j] = 0.0
    return mask


def checkpoint_files(hf_model, root, tf_name):
    """`hf_model`'s weights as Hugging Face safetensors, as a TF checkpoint
    with Google's names (`tf_name`; only where TensorFlow is installed) and
    as `weights.convert` makes them from the latter (else from the former):
    {name: path}."""
    hf_model.save_pretrained(root / "hf", safe_serialization=True)
    sources = {"hf-safetensors": root / "hf"}
    if have_tensorflow():
        sources[tf_name] = write_tf_checkpoint(
            hf_to_google_arrays(hf_model), root / "tf" / "bert_model.ckpt"
        )
    ours = root / "ours.safetensors"
    origin = sources.get(tf_name, root / "hf")
    with contextlib.redirect_stdout(io.StringIO()):
        convert([str(origin), str(ours)])
    sources["converted-safetensors"] = ours
    return sources


# Parity in float32: outputs on a mixed batch, compared to a reference.

PARITY_TOLERANCE = 1e-5


def mixed_length_batch(lengths, seed=0, vocab_size=TINY["vocab_size"]):
    """Random token and segment ids, one row per (source length, target
    length) of `lengths`; padding is token 0 with segment 0."""
    rng = np.random.default_rng(seed)
    length = max(s + t for s, t in lengths)
    token_ids = np.zeros((len(lengths), length), "int32")
    segment_ids = np.zeros((len(lengths), length), "int32")
    for row, (source, target) in enumerate(lengths):
        token_ids[row, : source + target] = rng.integers(
            1, vocab_size, source + target
        )
        segment_ids[row, source : source + target] = 1
    return token_ids, segment_ids


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run(model, token_ids, segment_ids):
    """The model's outputs in inference, as NumPy."""
    return keras.ops.convert_to_numpy(
        model([token_ids, segment_ids], training=False)
    )


def check(label, ours, theirs, keep=None):
    """Within PARITY_TOLERANCE where `keep` is true (e.g. non-padding
    positions); run with `-s` to see the max abs difference."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if keep is not None:
        ours, theirs = ours[keep], theirs[keep]
    diff = float(np.max(np.abs(ours - theirs)))
    print(
        f"\nparity[{keras.backend.backend()}] {label}: max abs diff {diff:.2e}"
    )
    assert diff < PARITY_TOLERANCE, f"{label}: {diff}"


# Hugging Face's convert_bert_pytorch_checkpoint_to_original_tf.py renames
# by these substitutions, in this order, and transposes dense kernels.
_HF_TO_TF_RULES = (
    ("layer.", "layer_"),
    ("word_embeddings.weight", "word_embeddings"),
    ("position_embeddings.weight", "position_embeddings"),
    ("token_type_embeddings.weight", "token_type_embeddings"),
    (".", "/"),
    ("LayerNorm/weight", "LayerNorm/gamma"),
    ("LayerNorm/bias", "LayerNorm/beta"),
    ("weight", "kernel"),
)


def hf_to_google_arrays(hf_model):
    """The state dict of a BertForMaskedLM under Google's names.

    A RoFormerForMaskedLM's too, as bojone's RoFormer checkpoints name
    them: BERT's names (`bert/...`), no position embeddings.
    """
    arrays = {}
    for name, tensor in hf_model.state_dict().items():
        if name.startswith("cls.predictions.decoder."):
            continue  # tied to the word embeddings and the output bias
        if name.endswith("embed_positions.weight"):
            continue  # RoFormer's fixed sinusoids
        if name.startswith("roformer."):
            name = "bert." + name.removeprefix("roformer.")
        array = tensor.detach().numpy()
        if name == "cls.predictions.bias":
            arrays["cls/predictions/output_bias"] = array
            continue
        for old, new in _HF_TO_TF_RULES:
            name = name.replace(old, new)
        if name.endswith("/kernel"):
            array = array.T
        arrays[name] = np.ascontiguousarray(array)
    return arrays


# T5 v1.1 / mT5 -------------------------------------------------------------

# A tiny mT5: buckets and max_distance small enough that short sequences
# reach the logarithmic buckets; vocabulary small enough that an end
# token comes up in a few steps.
TINY_T5 = dict(
    vocab_size=40,
    d_model=16,
    d_kv=4,
    d_ff=24,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    dropout_rate=0.0,
)


def hf_mt5(seed=0, scale=0.2, **overrides):
    """A random, eval-mode `MT5ForConditionalGeneration` of TINY_T5's shape
    whose output layer is its own (untied), as in Google's mT5."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.MT5Config(
        **{**TINY_T5, **overrides}, attn_implementation="eager"
    )
    model = transformers.MT5ForConditionalGeneration(config).eval()
    # transformers ties lm_head to the shared embedding; mT5's is not.
    model.lm_head.weight = torch.nn.Parameter(
        model.lm_head.weight.detach().clone()
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            value = scale * torch.randn_like(parameter)
            if "layer_norm" in name:
                value += 1.0
            parameter.copy_(value)
    return model


def hf_t5_to_google_arrays(hf_model):
    """A T5 state dict under Google's mesh TensorFlow names, by the rules
    of Hugging Face's `load_tf_weights_in_t5` read backwards (written
    here independently of `weights.t5_mapping`)."""
    arrays = {}
    for name, tensor in hf_model.state_dict().items():
        if name.endswith("embed_tokens.weight"):
            continue  # the shared embedding again
        array = tensor.detach().numpy()
        parts = name.removesuffix(".weight").split(".")
        if parts == ["lm_head"]:
            arrays["decoder/logits/kernel"] = np.ascontiguousarray(array.T)
            continue
        if parts == ["shared"]:
            arrays["shared/embedding"] = array
            continue
        google = []
        for part, after in zip(parts, parts[1:] + [None]):
            if part in ("block", "layer"):
                continue
            if part.isdigit():
                kind = "block" if len(google) == 1 else "layer"
                google.append(f"{kind}_{int(part):03d}")
            elif part in ("layer_norm", "final_layer_norm"):
                google.append("rms_norm/scale")
            elif part in ("wi_0", "wi_1", "wi", "wo"):
                google.append(f"{part}/kernel")
            else:
                google.append(part)
        # Every Linear (out, in) and the (buckets, heads) table transpose.
        if not google[-1].endswith("scale"):
            array = np.ascontiguousarray(array.T)
        arrays["/".join(google)] = array
    return arrays


def write_sentencepiece_model(path, texts, vocab_size=300):
    """Train a small SentencePiece model on `texts` with T5's special ids
    (pad 0, end-of-sequence 1, unknown 2, no start piece) and write it to
    `path`: the `spiece.model` of a tiny mT5 directory."""

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    pathlib.Path(path).write_bytes(model.getvalue())
    return path
