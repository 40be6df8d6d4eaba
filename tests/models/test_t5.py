"""T5 v1.1 / mT5 against Hugging Face's `MT5ForConditionalGeneration`.

One random mT5 (untied output layer, as Google's) is written as Hugging
Face safetensors, as a `pytorch_model.bin` and as a Google TF checkpoint
(names from `tests.checkpoints`, independent of `weights.t5_mapping`); each
must give Hugging Face's logits to float32 round-off. Greedy decoding must
write Hugging Face's `generate` titles token for token, end tokens
included; beam search, with no end token, its beams and scores; and the
cached decoder the reference decoder's titles with end tokens. Run with
`-s` to see the max abs differences.
"""

import keras
import numpy as np
import pytest

from models.t5 import T5Config
from models.t5 import build_t5_model
from models.t5_decoding import T5Decoder
from models.t5_layers import relative_position_bucket
from tests.checkpoints import TINY_T5
from tests.checkpoints import have_tensorflow
from tests.checkpoints import hf_mt5
from tests.checkpoints import hf_t5_to_google_arrays
from tests.checkpoints import write_tf_checkpoint
from weights import CheckpointError

# Relative to the logits' size (`check`).
TOLERANCE = 1e-5
EOS = 1
# Sources of several lengths, padded in a batch (0 is padding).
SOURCE_LENGTHS = [20, 7, 25, 3]


def make_sources(seed=0):
    rng = np.random.default_rng(seed)
    return [
        [int(i) for i in rng.integers(2, TINY_T5["vocab_size"], length)]
        for length in SOURCE_LENGTHS
    ]


def padded(rows):
    width = max(len(row) for row in rows)
    array = np.zeros((len(rows), width), "int32")
    for index, row in enumerate(rows):
        array[index, : len(row)] = row
    return array


@pytest.fixture(scope="module")
def hf_model():
    model = hf_mt5(seed=0)
    # A likelier end token, so that greedy titles end at different steps.
    import torch

    with torch.no_grad():
        model.lm_head.weight[EOS] *= 3.0
    return model


@pytest.fixture(scope="module")
def checkpoints(hf_model, tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("t5")
    hf_model.save_pretrained(root / "hf", safe_serialization=True)
    state = {k: v.clone() for k, v in hf_model.state_dict().items()}
    torch.save(state, root / "pytorch_model.bin")
    files = {
        "hf-safetensors": root / "hf",
        "hf-bin": root / "pytorch_model.bin",
    }
    if have_tensorflow():
        files["google-tf-ckpt"] = write_tf_checkpoint(
            hf_t5_to_google_arrays(hf_model), root / "tf" / "model.ckpt-1000"
        )
    return files


@pytest.fixture(scope="module")
def model(checkpoints):
    return build_t5_model(
        dict(TINY_T5), checkpoints["hf-safetensors"], with_lm="linear"
    )


def hf_logits(hf_model, sources, targets):
    import torch

    with torch.no_grad():
        return hf_model(
            input_ids=torch.tensor(sources, dtype=torch.long),
            attention_mask=torch.tensor(sources != 0, dtype=torch.long),
            decoder_input_ids=torch.tensor(targets, dtype=torch.long),
        ).logits.numpy()


def check(label, ours, theirs):
    """float32 round-off: within TOLERANCE of the largest logit's size."""
    diff = float(np.max(np.abs(ours - theirs)))
    scale = max(1.0, float(np.max(np.abs(theirs))))
    print(
        f"\nparity[{keras.backend.backend()}] {label}: max abs diff "
        f"{diff:.2e} (largest logit {scale:.1f})"
    )
    assert diff < TOLERANCE * scale, f"{label}: {diff}"


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets,distance", [(32, 128), (8, 20)])
def test_relative_position_bucket_matches_hf(bidirectional, buckets, distance):
    transformers = pytest.importorskip("transformers")
    import torch

    relative = np.arange(-300, 301)
    attention = transformers.models.mt5.modeling_mt5.MT5Attention
    theirs = attention._relative_position_bucket(
        torch.tensor(relative), bidirectional, buckets, distance
    ).numpy()
    ours = relative_position_bucket(
        keras.ops.convert_to_tensor(relative), bidirectional, buckets, distance
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), theirs)


@pytest.mark.parametrize(
    "source", ["hf-safetensors", "hf-bin", "google-tf-ckpt"]
)
def test_logits_match_hf(hf_model, checkpoints, source):
    if source not in checkpoints:
        pytest.skip("no TF checkpoint: TensorFlow is not installed")
    ours = build_t5_model(dict(TINY_T5), checkpoints[source], with_lm="linear")
    sources = padded(make_sources())
    rng = np.random.default_rng(1)
    targets = rng.integers(2, TINY_T5["vocab_size"], (len(sources), 22))
    targets[:, 0] = 0  # the decoder's start token
    targets = targets.astype("int32")
    logits = keras.ops.convert_to_numpy(ours([sources, targets]))
    check(f"{source} logits", logits, hf_logits(hf_model, sources, targets))


def random_batch(seed=1, target_len=22):
    sources = padded(make_sources())
    rng = np.random.default_rng(seed)
    targets = rng.integers(2, TINY_T5["vocab_size"], (len(sources), target_len))
    targets[:, 0] = 0  # the decoder's start token
    return sources, targets.astype("int32")


def test_model_directory_with_more_decoder_layers(tmp_path):
    """config.json read from the directory (transformers 5 writes
    `tie_word_embeddings: true` for mT5, which is read as untied), and a
    decoder deeper than the encoder."""
    hf = hf_mt5(seed=5, num_decoder_layers=3)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = build_t5_model(tmp_path, tmp_path, with_lm="linear")
    assert ours.t5_config.num_decoder_layers == 3
    sources, targets = random_batch()
    logits = keras.ops.convert_to_numpy(ours([sources, targets]))
    check("directory logits", logits, hf_logits(hf, sources, targets))


def test_t5_v1_0_tied_relu_matches_hf(tmp_path):
    """T5 v1.0's shape: ReLU feed-forward, output layer tied to the
    shared embedding with hidden states scaled by d_model^-0.5."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    config = transformers.T5Config(
        **TINY_T5, feed_forward_proj="relu", attn_implementation="eager"
    )
    hf = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, parameter in hf.named_parameters():
            value = 0.2 * torch.randn_like(parameter)
            parameter.copy_(value + 1.0 if "layer_norm" in name else value)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = build_t5_model(tmp_path, tmp_path, with_lm="linear")
    assert ours.t5_config.tie_word_embeddings
    sources, targets = random_batch()
    logits = keras.ops.convert_to_numpy(ours([sources, targets]))
    check("t5 v1.0 logits", logits, hf_logits(hf, sources, targets))


def hf_generate(hf_model, source, maxlen, **options):
    import torch

    with torch.no_grad():
        return hf_model.generate(
            torch.tensor([source]),
            do_sample=False,
            max_new_tokens=maxlen,
            **options,
        )


def test_greedy_matches_hf_generate(hf_model, model):
    sources = make_sources(seed=2) + make_sources(seed=3)
    ours = T5Decoder(model, maxlen=12, bucket=8).greedy_batch(sources)
    for source, title in zip(sources, ours):
        theirs = hf_generate(hf_model, source, 12, num_beams=1)
        assert title == theirs[0, 1:].tolist()
    ended = [title[-1] == EOS for title in ours]
    assert any(ended) and not all(ended), "the case must test both"


def test_beam_search_matches_hf_generate(hf_model, model):
    """No end token: both run a plain beam search of 10 steps, where
    `length_penalty=0` makes Hugging Face rank by summed log-probas."""
    decoder = T5Decoder(model, end_id=-1, maxlen=10, bucket=8)
    nbest = decoder.beam_search_batch(make_sources(), topk=3, nbest=True)
    for source, hypotheses in zip(make_sources(), nbest):
        out = hf_generate(
            hf_model,
            source,
            10,
            num_beams=3,
            num_return_sequences=3,
            length_penalty=0.0,
            eos_token_id=None,
            output_scores=True,
            return_dict_in_generate=True,
        )
        assert [ids for ids, _ in hypotheses] == out.sequences[:, 1:].tolist()
        scores = np.array([score for _, score in hypotheses])
        np.testing.assert_allclose(
            scores, out.sequences_scores.numpy(), atol=1e-4
        )


def test_cached_decoder_matches_the_reference(model):
    """Beams that end: the cached path against the decoder rerun."""
    sources = make_sources(seed=4)[:2]
    fast = T5Decoder(model, maxlen=8, bucket=8)
    reference = T5Decoder(model, maxlen=8, reference=True)
    ours = fast.beam_search_batch(sources, topk=3, nbest=True)
    theirs = reference.beam_search_batch(sources, topk=3, nbest=True)
    for a, b in zip(ours, theirs):
        assert [ids for ids, _ in a] == [ids for ids, _ in b]
        np.testing.assert_allclose(
            [s for _, s in a], [s for _, s in b], atol=1e-4
        )
    assert any(ids[-1] == EOS for per in ours for ids, _ in per)


def test_samples_end_and_stay_in_vocabulary(model):
    samples = T5Decoder(model, maxlen=6, bucket=8).sample_batch(
        make_sources(), n=2, topk=5, seed=0
    )
    assert [len(per) for per in samples] == [2] * len(SOURCE_LENGTHS)
    for per in samples:
        for ids in per:
            assert 1 <= len(ids) <= 6
            assert all(0 <= i < TINY_T5["vocab_size"] for i in ids)


def test_keep_tokens_keeps_embedding_rows_and_output_columns(
    hf_model, checkpoints
):
    keep = [0, 1, 5, 9, 3, 20, 33, 7]
    ours = build_t5_model(
        dict(TINY_T5),
        checkpoints["hf-safetensors"],
        with_lm="linear",
        keep_tokens=keep,
    )
    sources = np.array([[2, 3, 4, 5, 6, 0]], "int32")
    targets = np.array([[0, 5, 3, 7]], "int32")
    logits = keras.ops.convert_to_numpy(
        ours([sources, targets])
    )  # ids index the kept rows
    full = hf_logits(
        hf_model,
        np.array(keep)[sources] * (sources != 0),
        np.array(keep)[targets],
    )
    check("keep_tokens logits", logits, full[..., keep])


def test_saved_model_loads_back_whole(model, tmp_path):
    path = tmp_path / "t5.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    sources, targets = padded(make_sources()), np.zeros((4, 3), "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded([sources, targets])),
        keras.ops.convert_to_numpy(model([sources, targets])),
        atol=1e-6,
    )
    assert T5Decoder(loaded, maxlen=3).greedy_batch(make_sources()[:1])


def test_checkpoint_that_does_not_fit_lists_every_problem(checkpoints):
    with pytest.raises(CheckpointError, match="problem") as error:
        build_t5_model(
            dict(TINY_T5, d_ff=32, num_layers=3), checkpoints["hf-safetensors"]
        )
    message = str(error.value)
    assert "encoder.block.2.layer.0.SelfAttention.q.weight: missing" in message
    assert "checkpoint has (16, 24), model expects (16, 32)" in message


def test_bad_config_fails_in_one_line():
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="gated-swish")
    with pytest.raises(TypeError, match="unknown config overrides"):
        build_t5_model(dict(TINY_T5), num_layer=2)
    with pytest.raises(ValueError, match="T5Decoder needs a model"):
        T5Decoder(keras.Sequential())
