"""RoFormer against Hugging Face: full pass, cached decoding, keep_tokens.

One random Hugging Face RoFormerForMaskedLM is written as bojone's TF
checkpoint layout (BERT's names, no position embeddings), as Hugging Face
safetensors (with its config.json, model_type 'roformer') and as our
converted safetensors; each must give Hugging Face's outputs to 1e-5 in
float32. The cached decoder's logits, one token per step on its key/value
cache, must be Hugging Face's full-pass logits at the same positions: the
rotary angle of every cached step is its row's true position. Run with `-s`
to see the max abs differences.
"""

import functools
import json

import keras
import numpy as np
import pytest

from models import build_transformer_model
from models.config import BertConfig
from models.decoding import Seq2SeqDecoder
from tests.checkpoints import check
from tests.checkpoints import checkpoint_files
from tests.checkpoints import hf_roformer_masked_lm
from tests.checkpoints import hf_run
from tests.checkpoints import mixed_length_batch
from tests.checkpoints import randomize
from tests.checkpoints import run
from tests.checkpoints import softmax
from tests.checkpoints import unilm_mask
from tests.common import TINY

# (source length, target length) per sample; padded to the longest.
LENGTHS = [(5, 4), (3, 2), (7, 6)]
make_batch = functools.partial(mixed_length_batch, LENGTHS)


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    """The same random weights in up to three files, plus the torch model."""
    hf = hf_roformer_masked_lm(seed=0)
    root = tmp_path_factory.mktemp("roformer")
    return hf, checkpoint_files(hf, root, "bojone-tf-ckpt")


SOURCES = ["bojone-tf-ckpt", "hf-safetensors", "converted-safetensors"]


def load(sources, source, **kwargs):
    """A RoFormer from one file: HF's config.json names the family; the
    others are built with model='roformer' on TINY, as bert4keras does."""
    if source not in sources:
        pytest.skip(f"no {source}: TensorFlow is not installed")
    path = sources[source]
    if source == "hf-safetensors":
        return build_transformer_model(path, path, **kwargs)
    return build_transformer_model(dict(TINY), path, model="roformer", **kwargs)


@pytest.mark.parametrize("source", SOURCES)
def test_encoder_matches_hf(hf_checkpoints, source):
    hf, sources = hf_checkpoints
    model = load(sources, source)
    assert model.bert_config.model_type == "roformer"
    token_ids, segment_ids = make_batch()
    theirs = hf_run(hf.roformer, token_ids, segment_ids, token_ids != 0)
    check(
        f"roformer encoder/{source}",
        run(model, token_ids, segment_ids),
        theirs.last_hidden_state.numpy(),
        token_ids != 0,
    )


@pytest.mark.parametrize("source", SOURCES)
def test_unilm_matches_hf(hf_checkpoints, source):
    hf, sources = hf_checkpoints
    model = load(sources, source, application="unilm")
    token_ids, segment_ids = make_batch()
    mask = unilm_mask(token_ids, segment_ids)
    logits = hf_run(hf, token_ids, segment_ids, mask).logits.numpy()
    check(
        f"roformer unilm/{source}",
        run(model, token_ids, segment_ids),
        softmax(logits),
        token_ids != 0,
    )


def test_keep_tokens_matches_hf_kept_rows(hf_checkpoints):
    hf, sources = hf_checkpoints
    rng = np.random.default_rng(3)
    keep = [0, 1, 2, 3] + sorted(rng.choice(np.arange(4, 128), 40, False))
    model = load(
        sources, "converted-safetensors", application="unilm", keep_tokens=keep
    )
    new_ids, segment_ids = make_batch(seed=2, vocab_size=len(keep))
    old_ids = np.asarray(keep, "int32")[new_ids]
    mask = unilm_mask(old_ids, segment_ids)
    logits = hf_run(hf, old_ids, segment_ids, mask).logits.numpy()
    check(
        "roformer unilm+keep_tokens",
        run(model, new_ids, segment_ids),
        softmax(logits[..., keep]),
        new_ids != 0,
    )


def test_cached_decoding_matches_hf_full_pass(hf_checkpoints):
    """Sources of different lengths, padded, two rows each: every step's
    logits are Hugging Face's at the row's true position."""
    hf, sources = hf_checkpoints
    model = load(sources, "converted-safetensors", application="unilm")
    token_ids, segment_ids = make_batch(seed=4)
    source_lengths = np.array([s for s, _ in LENGTHS], "int32")
    steps = max(t for _, t in LENGTHS)
    sources_ids = np.where(segment_ids == 0, token_ids, 0)
    sources_ids = sources_ids[:, : source_lengths.max()]
    network = model.bert_network
    rows = 2
    first, cache = network.build_cache(
        sources_ids, source_lengths, rows_per_source=rows, slots=steps
    )
    hf_logits = hf_run(
        hf, token_ids, segment_ids, unilm_mask(token_ids, segment_ids)
    ).logits.numpy()
    batch = np.arange(len(LENGTHS))
    check(
        "roformer cached: after the source",
        first,
        hf_logits[batch, source_lengths - 1],
    )
    for step in range(steps):
        # Target token `step` of each row (0 past a row's end: compared
        # only where the row has it).
        position = source_lengths + step
        inside = position < token_ids.shape[1]
        tokens = token_ids[batch, np.minimum(position, token_ids.shape[1] - 1)]
        logits, _, cache = network.call_with_cache(
            np.repeat(tokens, rows).astype("int32"), cache, step
        )
        logits = keras.ops.convert_to_numpy(logits)[::rows]
        real = inside & (step < np.array([t for _, t in LENGTHS]))
        check(
            f"roformer cached: target step {step}",
            logits[real],
            hf_logits[batch[real], position[real]],
        )


def test_fast_decoder_equals_reference_decoder():
    """The cached decoder writes the titles the recomputing one writes."""
    model = build_transformer_model(
        dict(TINY), model="roformer", application="unilm"
    )
    randomize(model, seed=7)
    rng = np.random.default_rng(0)
    sources = [[2] + list(rng.integers(5, 128, n)) + [3] for n in (4, 9, 6, 1)]
    fast = Seq2SeqDecoder(model, end_id=3, maxlen=8)
    reference = Seq2SeqDecoder(model, end_id=3, maxlen=8, reference=True)
    for topk in (1, 3):
        assert fast.beam_search_batch(sources, topk) == (
            reference.beam_search_batch(sources, topk)
        )


def test_roformer_has_no_position_embeddings():
    model = build_transformer_model(dict(TINY), model="roformer")
    names = [layer.name for layer in model.layers]
    assert "Embedding-Position" not in names
    assert model.name == "roformer_encoder"


def test_saved_model_keeps_its_family(tmp_path):
    model = build_transformer_model(
        dict(TINY), model="roformer", application="unilm"
    )
    randomize(model, seed=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.bert_config.model_type == "roformer"
    token_ids, segment_ids = make_batch()
    check(
        "roformer .keras round trip",
        run(loaded, token_ids, segment_ids),
        run(model, token_ids, segment_ids),
    )


def test_unknown_model_type_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown model_type 'albert'"):
        build_transformer_model({**TINY, "model_type": "albert"})
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        build_transformer_model(dict(TINY), model="gpt")


def test_settings_not_built_are_refused_not_ignored(tmp_path):
    # Ignored, either would load and give wrong outputs.
    for values, message in [
        ({"rotary_value": True}, "rotary_value: true"),
        ({"embedding_size": 16}, "embedding_size 16 differs from hidden"),
    ]:
        path = tmp_path / "config.json"
        path.write_text(
            json.dumps({**TINY, "model_type": "roformer", **values})
        )
        with pytest.raises(ValueError, match=f"^{path}: {message}"):
            BertConfig.from_json(path)
    same = {**TINY, "embedding_size": TINY["hidden_size"], "rotary_value": 0}
    assert BertConfig.from_dict(same).hidden_size == TINY["hidden_size"]
