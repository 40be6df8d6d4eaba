"""T5 v1.1 / mT5 checkpoints into a `models.t5.T5Model`.

Two namings, both mapped from the model's Keras variables here:

- Google's T5 v1.1 / mT5 TensorFlow checkpoints (mesh TensorFlow names,
  as bert4keras's `mt5.1.1` and Hugging Face's `load_tf_weights_in_t5`
  read them): `shared/embedding`, `encoder/block_000/layer_000/
  SelfAttention/q`, `.../rms_norm/scale` (T5's: `layer_norm`,
  `final_layer_norm`), `.../DenseReluDense/wi_0/kernel`,
  `decoder/logits/kernel`; kernels are (in, out) as in Keras, the relative
  position tables (heads, buckets);
- Hugging Face's `model.safetensors` / `pytorch_model.bin`
  (`shared.weight`, `encoder.block.0.layer.0.SelfAttention.q.weight`,
  `lm_head.weight`...), Linear weights (out, in).

`keep_tokens` (bert4keras's, for mT5's 250k vocabulary) keeps rows of the
shared embedding and columns of the output layer.
"""

import pathlib

import numpy as np

from weights.loader import CheckpointError

# Directory contents tried in order (Hugging Face's, then a TF checkpoint).
HF_FILES = ("model.safetensors", "pytorch_model.bin")
# Optimizer state in Google's checkpoints (Adafactor's factored moments).
SLOT_SUFFIXES = ("_slot_v", "_slot_vc", "_slot_vr", "_slot_m")


def _attention_names(stack, index, slot, kind):
    """(keras prefix, google prefix, hf prefix) of one attention."""
    google = f"{stack.lower()}/block_{index:03d}/layer_{slot:03d}/{kind}"
    hf = f"{stack.lower()}.block.{index}.layer.{slot}.{kind}"
    return google, hf


def variable_names(config):
    """{keras variable path: (google name, hf name, kind)}.

    `kind`: 'kernel' (HF transposed), 'relative' (Google transposed),
    'embedding', 'lm' (vocabulary columns; HF transposed), 'scale'.
    """
    names = {
        "Embedding-Token/embeddings": (
            "shared/embedding",
            "shared.weight",
            "embedding",
        ),
    }
    for stack, layers in (
        ("Encoder", config.num_layers),
        ("Decoder", config.num_decoder_layers),
    ):
        google, hf = _attention_names(stack, 0, 0, "SelfAttention")
        names[f"{stack}-Embedding-Relative-Position/embeddings"] = (
            f"{google}/relative_attention_bias",
            f"{hf}.relative_attention_bias.weight",
            "relative",
        )
        for index in range(layers):
            names.update(_block_names(stack, index, config.gated))
        names[f"{stack}-Output-Norm/scale"] = (
            f"{stack.lower()}/rms_norm/scale",
            f"{stack.lower()}.final_layer_norm.weight",
            "scale",
        )
    if not config.tie_word_embeddings:
        names["Decoder-Output-LM/kernel"] = (
            "decoder/logits/kernel",
            "lm_head.weight",
            "lm",
        )
    return names


def _block_names(stack, index, gated):
    prefix = f"{stack}-Transformer-{index}"
    sublayers = [("MultiHeadSelfAttention", "SelfAttention")]
    if stack == "Decoder":
        sublayers.append(("MultiHeadCrossAttention", "EncDecAttention"))
    names = {}
    for slot, (ours, theirs) in enumerate(sublayers):
        google, hf = _attention_names(stack, index, slot, theirs)
        for part in "qkvo":
            names[f"{prefix}-{ours}/{part}/kernel"] = (
                f"{google}/{part}",
                f"{hf}.{part}.weight",
                "kernel",
            )
        names.update(_norm_names(f"{prefix}-{ours}", google, hf))
    google, hf = _attention_names(
        stack, index, len(sublayers), "DenseReluDense"
    )
    for part in ("wi_0", "wi_1", "wo") if gated else ("wi", "wo"):
        names[f"{prefix}-FeedForward/{part}/kernel"] = (
            f"{google}/{part}/kernel",
            f"{hf}.{part}.weight",
            "kernel",
        )
    names.update(_norm_names(f"{prefix}-FeedForward", google, hf))
    return names


def _norm_names(keras_prefix, google, hf):
    """The norm before a sub-layer sits beside it in both namings."""
    google = google.rsplit("/", 1)[0] + "/rms_norm/scale"
    hf = hf.rsplit(".", 1)[0] + ".layer_norm.weight"
    return {f"{keras_prefix}-Norm/scale": (google, hf, "scale")}


def to_keras(array, kind, naming):
    """A checkpoint array in the Keras variable's layout."""
    if naming == "hf" and kind in ("kernel", "lm"):
        return np.ascontiguousarray(array.T)
    if naming == "google" and kind == "relative":
        return np.ascontiguousarray(array.T)
    return array


def keep_vocab(array, kind, keep_tokens):
    """Slice a Keras-layout array to `keep_tokens` rows (or columns)."""
    if keep_tokens is None or kind not in ("embedding", "lm"):
        return array
    keep = np.asarray(keep_tokens, dtype=np.int64)
    size = array.shape[0 if kind == "embedding" else 1]
    if keep.size and (keep.min() < 0 or keep.max() >= size):
        raise CheckpointError(
            f"keep_tokens asks for row {keep.max()} of a {size}-token "
            "vocabulary (keep_tokens from another vocabulary?)"
        )
    return array[keep] if kind == "embedding" else array[:, keep]


def resolve_t5_file(path):
    """('hf' | 'google', file or TF prefix) for a file or directory."""
    path = pathlib.Path(path)
    if path.is_dir():
        for name in HF_FILES:
            if (path / name).is_file():
                return "hf", path / name
        indexes = sorted(path.glob("*.index"))
        if not indexes:
            raise FileNotFoundError(
                f"no {' or '.join(HF_FILES)} or TF checkpoint in {path}"
            )
        return "google", indexes[-1].with_suffix("")
    if path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return "hf", path
    if path.with_name(path.name + ".index").is_file():
        return "google", path
    raise FileNotFoundError(f"checkpoint not found: {path}")


def read_t5_arrays(path):
    """({name: array}, naming) of a T5 checkpoint, optimizer state left."""
    naming, path = resolve_t5_file(path)
    if naming == "google":
        from weights.formats import read_tf_checkpoint

        arrays = read_tf_checkpoint(path)
        arrays = {
            name: array
            for name, array in arrays.items()
            if not name.endswith(SLOT_SUFFIXES)
        }
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    else:
        arrays = _read_torch(path)
    return arrays, naming


def _read_torch(path):
    """A `pytorch_model.bin`, unpickled with weights_only=True."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {
        name: tensor.detach().float().numpy()
        for name, tensor in state.items()
        if isinstance(tensor, torch.Tensor)
    }


def layer_norm_name(name):
    """Google's T5 v1.0 / v1.1 spelling of an mT5 norm's name.

    mT5's checkpoints say `rms_norm`; T5's say `layer_norm` before a
    sub-layer and `final_layer_norm` after a stack (bert4keras reads them
    so as `t5.1.0` / `t5.1.1`); other names are returned unchanged."""
    stack, _, rest = name.partition("/")
    if rest == "rms_norm/scale":
        return f"{stack}/final_layer_norm/scale"
    return name.replace("/rms_norm/", "/layer_norm/")


def load_t5_checkpoint(model, path, keep_tokens=None):
    """Fill a `T5Model` from a Google or Hugging Face checkpoint.

    Every variable is checked (present, right shape) before any is
    assigned: a checkpoint that does not fit leaves the model untouched
    and raises one `CheckpointError` listing every problem.
    """
    if str(path).endswith(".weights.h5"):
        model.load_weights(str(path))
        return
    arrays, naming = read_t5_arrays(path)
    names = variable_names(model.t5_config)
    problems, pairs = [], []
    for variable in model.weights:
        google, hf, kind = names[variable.path]
        name = google if naming == "google" else hf
        if name == "lm_head.weight" and name not in arrays:
            # transformers 5 leaves out an output layer it tied on saving.
            name = "shared.weight"
        if naming == "google" and layer_norm_name(name) in arrays:
            name = layer_norm_name(name)  # T5's own spelling
        if name not in arrays:
            problems.append(f"{name}: missing (model variable {variable.path})")
            continue
        array = keep_vocab(
            to_keras(arrays[name], kind, naming), kind, keep_tokens
        )
        if tuple(array.shape) != tuple(variable.shape):
            problems.append(
                f"{name}: checkpoint has {tuple(array.shape)}, model "
                f"expects {tuple(variable.shape)}"
            )
            continue
        pairs.append((variable, array))
    if problems:
        raise CheckpointError(
            f"cannot load {path} into {model.name}: {len(problems)} "
            "problem(s)\n  " + "\n  ".join(problems)
        )
    for variable, array in pairs:
        variable.assign(array.astype("float32"))
