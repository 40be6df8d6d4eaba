"""Checkpoint files in, `{google_name: np.ndarray}` out (and back).

Readers: Google TF checkpoints (needs TensorFlow), safetensors (ours, with
Google names, or Hugging Face's), `pytorch_model.bin` (needs torch) and model
directories holding one of those; `read_keras_weights` reads our Keras
`.weights.h5` files by layer name, with no model built. Hugging Face names
are mapped to Google names here, transposing Linear weights, so that the
loader only ever sees one naming. Writer: `save_safetensors`, which is also what
`python -m weights.convert` produces, so a machine without TensorFlow can
load a Google checkpoint once it has been converted elsewhere.
"""

import json
import logging
import pathlib

import numpy as np

from weights import mapping

logger = logging.getLogger(__name__)

KERAS_SUFFIX = ".weights.h5"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
# What a model directory is searched for, first match wins.
DIRECTORY_FILES = (
    "model.safetensors",
    "bert_model.safetensors",
    "pytorch_model.bin",
    "bert_model.ckpt.index",
    "model.weights.h5",
)
# safetensors metadata keys written by `save_safetensors`.
NAMING_KEY = "naming"
KEEP_TOKENS_KEY = "keep_tokens"


def resolve(path) -> tuple[str, pathlib.Path]:
    """The format ('tf', 'safetensors', 'torch', 'keras') and file of `path`.

    `path` may be a file, a TF checkpoint prefix (`bert_model.ckpt`, with or
    without `.index`) or a directory holding one of `DIRECTORY_FILES`.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = _find_in_directory(path)
    name = path.name
    if name.endswith(".index"):
        path = path.with_name(name.removesuffix(".index"))
    elif ".data-" in name:
        path = path.with_name(name.split(".data-")[0])
    if name.endswith(KERAS_SUFFIX):
        kind = "keras"
    elif name.endswith(".safetensors"):
        kind = "safetensors"
    elif name.endswith(TORCH_SUFFIXES):
        kind = "torch"
    else:
        kind = "tf"
    probe = path.with_name(path.name + ".index") if kind == "tf" else path
    if not probe.is_file():
        if kind == "tf" and path.is_file():
            raise ValueError(
                f"{path}: unknown checkpoint format; expected "
                f"{', '.join(FORMAT_NAMES)}"
            )
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return kind, path


# What `resolve` recognises, by name.
FORMAT_NAMES = (
    "a TF checkpoint prefix (with .index and .data-* files)",
    ".safetensors",
    "pytorch_model.bin (.bin/.pt/.pth)",
    "Keras .weights.h5",
    "or a directory holding one",
)


def _find_in_directory(directory):
    for name in DIRECTORY_FILES:
        if (directory / name).is_file():
            return directory / name
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0]
    raise FileNotFoundError(
        f"no checkpoint in {directory}: expected one of "
        f"{', '.join(DIRECTORY_FILES)} or a single TF checkpoint (*.index)"
    )


def check_file(path) -> None:
    """A quick look at a checkpoint before a model is built for it: a
    safetensors file must be as long as its header says (a download cut
    short is not), a TF checkpoint must have its data files. Raises
    ValueError naming the file; reading it fully is `read_checkpoint`."""
    kind, path = resolve(path)
    if kind == "safetensors":
        _check_safetensors_length(path)
    elif kind == "tf":
        index = path.with_name(path.name + ".index")
        data = list(path.parent.glob(path.name + ".data-*"))
        if not data:
            raise ValueError(
                f"{index}: no {path.name}.data-* file beside it (the "
                "weights of a TF checkpoint)"
            )


def _check_safetensors_length(path):
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if length < 2 or 8 + length > size:
            raise ValueError(
                f"{path}: not a safetensors file, or cut short (no complete "
                "header)"
            )
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise ValueError(
                f"{path}: safetensors header is not JSON"
            ) from None
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__"
    ]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        raise ValueError(
            f"{path}: cut short ({size} bytes, its header says {expected}); "
            "download it again"
        )


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """Every weight of a checkpoint, keyed by Google name.

    Optimizer state is dropped; names with no Google counterpart (pooler,
    NSP head...) are kept as they are, for the loader to report.
    """
    kind, path = resolve(path)
    readers = {
        "tf": read_tf_checkpoint,
        "safetensors": read_safetensors,
        "torch": read_torch,
    }
    if kind not in readers:
        raise ValueError(
            f"{path} holds Keras weights, not named tensors: load it with "
            "model.load_weights() or weights.load_checkpoint(model, path), "
            "or read it with read_keras_weights"
        )
    try:
        arrays = readers[kind](path)
    except ImportError:
        raise
    except Exception as error:  # each reader has its own error classes
        message = " ".join(str(error).split())[:300]
        raise ValueError(
            f"{path}: cannot read this {kind} checkpoint (cut short by an "
            f"interrupted download, or corrupt?): {type(error).__name__}: "
            f"{message}"
        ) from None
    if not arrays:
        raise ValueError(f"{path}: the checkpoint holds no tensors")
    return arrays


def read_names(path) -> set[str]:
    """The Google names of a checkpoint's weights, reading as little as
    its format allows (a TF checkpoint's index, a safetensors header); a
    model's family can be told from them before it is built."""
    kind, path = resolve(path)
    if kind == "tf":
        import tensorflow as tf

        names = {name for name, _ in tf.train.list_variables(str(path))}
    elif kind == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as reader:
            names = set(reader.keys())
    elif kind == "torch":
        names = set(read_torch(path))
    else:
        names = set(read_keras_weights(path))
    return {
        name if "/" in name else (mapping.hf_to_google(name) or name)
        for name in names
    }


def read_tf_checkpoint(prefix) -> dict[str, np.ndarray]:
    """A Google TF checkpoint (`bert_model.ckpt`), through TensorFlow."""
    try:
        # TensorFlow's own format: the one import of it outside models/backend.
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            f"reading the TensorFlow checkpoint {prefix} needs TensorFlow, "
            "which is not installed. On a machine with TensorFlow run\n"
            f"    python -m weights.convert {prefix} bert_model.safetensors\n"
            "and load the .safetensors file here instead."
        ) from None
    reader = tf.train.load_checkpoint(str(prefix))
    names = sorted(reader.get_variable_to_shape_map())
    slots = [name for name in names if mapping.is_optimizer_slot(name)]
    if slots:
        logger.debug("%s: skipping %d optimizer variables", prefix, len(slots))
    return {
        name: reader.get_tensor(name)
        for name in names
        if not mapping.is_optimizer_slot(name)
    }


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Ours (Google names) or Hugging Face's; told apart name by name."""
    from safetensors.numpy import load_file

    return from_hf_names(load_file(str(path)))


def read_torch(path) -> dict[str, np.ndarray]:
    """A Hugging Face `pytorch_model.bin`, unpickled with weights_only."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch; the CPU build "
            "is enough), or convert it where torch is installed:\n"
            f"    python -m weights.convert {path} model.safetensors"
        ) from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    arrays = {
        name: _torch_to_numpy(tensor)
        for name, tensor in state.items()
        if isinstance(tensor, torch.Tensor)
    }
    return from_hf_names(arrays)


def read_keras_weights(source) -> dict[str, np.ndarray]:
    """A Keras weights file of a `build_transformer_model` model, by name.

    `source`: a `.weights.h5` path or an open binary file (the weights
    inside a `.keras` archive). Keras stores each layer's variables as
    `vars/0`, `vars/1`, ... in the order the layer created them, in a
    group whose `name` attribute is the layer's name (`Embedding-Token`;
    `query` inside `Transformer-0-MultiHeadSelfAttention`). The names
    joined give the layer's variable path prefix, and the mapping table
    lists that layer's variables in the same order (kernel before bias,
    gamma before beta), so each array gets its Google name.
    """
    import h5py

    arrays = {}
    with h5py.File(source, "r") as file:
        for group in _layer_variable_groups(file):
            values = file[group]
            layer = _keras_layer_path(file, group)
            names = mapping.keras_variables_of(layer)
            if len(names) != len(values):
                raise ValueError(
                    f"layer {layer}: {len(values)} variables, expected "
                    f"{len(names)} ({', '.join(names) or 'none known'})"
                )
            for index, name in enumerate(names):
                array = np.asarray(values[str(index)], dtype="float32")
                arrays[mapping.keras_to_google(name)] = array
    return arrays


def _layer_variable_groups(file):
    """The `vars` groups holding variables, of layers only: a `.keras`
    archive also holds the optimizer's state, outside `layers/`."""
    import h5py

    found = []

    def visit(name, item):
        if name.endswith("vars") and isinstance(item, h5py.Group):
            if len(item):
                found.append(f"layers/{name}")

    if "layers" not in file:
        raise ValueError("no layers: not the weights of a Keras model")
    file["layers"].visititems(visit)
    return found


def _keras_layer_path(file, group):
    """`Transformer-0-MultiHeadSelfAttention/query` for the `vars` group of
    that layer: the `name` attributes of the groups above, outermost
    first, without the model's own."""
    parts = group.split("/")[:-1]
    names = []
    for depth in range(1, len(parts) + 1):
        above = "/".join(parts[:depth] + ["vars"])
        if above in file and "name" in file[above].attrs:
            names.append(str(file[above].attrs["name"]))
    return "/".join(names)


def _torch_to_numpy(tensor):
    # NumPy has no bfloat16, and BERT weights are float32 anyway.
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.detach().numpy()


def from_hf_names(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename Hugging Face tensors to Google names; leave the rest alone.

    Google names contain '/', Hugging Face names never do, so each name says
    which naming it uses. Unknown Hugging Face names are kept unchanged.
    """
    renamed = {}
    for name, array in arrays.items():
        google = None if "/" in name else mapping.hf_to_google(name)
        if google is None:
            renamed[name] = array
        elif mapping.hf_is_transposed(google):
            renamed[google] = np.ascontiguousarray(array.T)
        else:
            renamed[google] = array
    return renamed


def read_keep_tokens(path) -> list[int] | None:
    """The `keep_tokens` stored with one of our safetensors files, if any."""
    kind, path = resolve(path)
    if kind != "safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as reader:
        metadata = reader.metadata() or {}
    if KEEP_TOKENS_KEY not in metadata:
        return None
    return json.loads(metadata[KEEP_TOKENS_KEY])


def model_arrays(model) -> dict[str, np.ndarray]:
    """A model's weights under their Google names, as float32 arrays.

    float32 whatever the dtype policy, so that NumPy and torch readers can
    open the file (neither has a NumPy bfloat16).
    """
    from keras import ops

    arrays = {}
    for variable in model.weights:
        name = mapping.keras_to_google(variable.path)
        if name is None:
            raise ValueError(f"{variable.path} has no checkpoint name")
        value = ops.convert_to_numpy(ops.cast(variable.value, "float32"))
        arrays[name] = np.ascontiguousarray(value)
    return arrays


def write_safetensors(arrays, path, keep_tokens=None) -> pathlib.Path:
    """Write Google-named arrays; `keep_tokens` goes into the metadata."""
    from safetensors.numpy import save_file

    metadata = {NAMING_KEY: "google"}
    if keep_tokens is not None:
        keep_tokens = [int(token) for token in keep_tokens]
        rows = arrays["bert/embeddings/word_embeddings"].shape[0]
        if len(keep_tokens) != rows:
            raise ValueError(
                f"{len(keep_tokens)} keep_tokens for {rows} embedding rows"
            )
        metadata[KEEP_TOKENS_KEY] = json.dumps(keep_tokens)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(arrays), str(path), metadata=metadata)
    return path


def save_safetensors(model, path, keep_tokens=None) -> pathlib.Path:
    """Save a model's weights as Google-named safetensors.

    Pass the `keep_tokens` the model was built with: they are stored in the
    file, so that the vocabulary rows it holds stay known (USER-NEEDS 9) and
    loading it again with the same `keep_tokens` does not slice twice.
    """
    return write_safetensors(model_arrays(model), path, keep_tokens)
