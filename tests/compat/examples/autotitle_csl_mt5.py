#! -*- coding: utf-8 -*-
# Fine-tune mT5 (T5 v1.1) to write the title of a CSL abstract, in
# bert4keras 0.11's style.
#
# This script makes the bert4keras calls that bert4keras's own
# examples/task_seq2seq_autotitle_csl_mt5.py makes, with its settings
# names and values (so one set of test edits fits both): SpTokenizer with
# no start token and '</s>' as the end token, keep_tokens read from a JSON
# file, build_transformer_model(model='mt5.1.1', return_keras_model=False)
# for its .encoder / .decoder / .model, a Loss layer reading the decoder's
# mask, Adam, a DataGenerator of [abstract ids, [0] + title ids], an
# AutoRegressiveDecoder whose predict runs the decoder on the encoded
# abstract, and an Evaluator callback scoring ROUGE / BLEU on characters
# and keeping the best weights. It is written as a bert4keras script and
# ported by docs/porting.md's rewrite in tests/compat/test_examples_mt5.py.
# Data: CSL from https://github.com/CLUEbenchmark/CLGE (title \t abstract).

import json

import numpy as np
from bert4keras.backend import K
from bert4keras.backend import keras
from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import Adam
from bert4keras.snippets import AutoRegressiveDecoder
from bert4keras.snippets import DataGenerator
from bert4keras.snippets import open
from bert4keras.snippets import sequence_padding
from bert4keras.tokenizers import SpTokenizer
from keras.models import Model
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu
from rouge import Rouge
from tqdm import tqdm

# sizes
max_c_len = 256
max_t_len = 32
batch_size = 16
epochs = 40

# bojone's mT5 files: config, Google checkpoint, the reduced Chinese
# SentencePiece model and the mT5 ids its pieces keep
config_path = "/root/kg/bert/mt5/mt5_base/t5_config.json"
checkpoint_path = "/root/kg/bert/mt5/mt5_base/model.ckpt-1000000"
spm_path = "/root/kg/bert/mt5/sentencepiece_cn.model"
keep_tokens_path = "/root/kg/bert/mt5/sentencepiece_cn_keep_tokens.json"


def read_pairs(filename):
    """(title, abstract) pairs of a CSL file, one tab-separated per line."""
    pairs = []
    with open(filename, encoding="utf-8") as f:
        for line in f:
            title, content = line.strip().split("\t")
            pairs.append((title, content))
    return pairs


train_data = read_pairs("/root/csl/train.tsv")
valid_data = read_pairs("/root/csl/val.tsv")
test_data = read_pairs("/root/csl/test.tsv")

# T5 has no start token; every sequence ends with </s>
tokenizer = SpTokenizer(spm_path, token_start=None, token_end="</s>")
keep_tokens = json.load(open(keep_tokens_path))


class data_generator(DataGenerator):
    """Batches of [abstract ids, 0 + title ids]; the loss is in the model."""

    def __iter__(self, random=False):
        sources, targets = [], []
        for is_end, (title, content) in self.sample(random):
            source_ids, _ = tokenizer.encode(content, maxlen=max_c_len)
            target_ids, _ = tokenizer.encode(title, maxlen=max_t_len)
            sources.append(source_ids)
            targets.append([0] + target_ids)  # 0 starts T5's decoder
            if len(sources) == self.batch_size or is_end:
                yield (
                    [sequence_padding(sources), sequence_padding(targets)],
                    None,
                )
                sources, targets = [], []


class CrossEntropy(Loss):
    """Next-token cross entropy over the title, masked by the decoder."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        y_true = y_true[:, 1:]  # what each position should predict
        y_mask = K.cast(mask[1], K.floatx())[:, :-1]  # the decoder's mask
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


t5 = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    keep_tokens=keep_tokens,
    model="mt5.1.1",
    return_keras_model=False,
    name="T5",
)

encoder = t5.encoder
decoder = t5.decoder
model = t5.model
model.summary()

output = CrossEntropy(1)([model.inputs[1], model.outputs[0]])
model = Model(model.inputs, output)
model.compile(optimizer=Adam(2e-4))


class AutoTitle(AutoRegressiveDecoder):
    """Beam search over the decoder, the abstract encoded once."""

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        c_encoded = inputs[0]
        return decoder.predict([c_encoded, output_ids])[:, -1]

    def generate(self, text, topk=1):
        c_token_ids, _ = tokenizer.encode(text, maxlen=max_c_len)
        c_encoded = encoder.predict(np.array([c_token_ids]))[0]
        output_ids = self.beam_search([c_encoded], topk)
        return tokenizer.decode(output_ids)


# T5 starts decoding from id 0, its padding id
autotitle = AutoTitle(start_id=0, end_id=tokenizer._token_end_id, maxlen=32)


class Evaluator(keras.callbacks.Callback):
    """Scores the validation titles after each epoch; keeps the best."""

    def __init__(self):
        self.rouge = Rouge()
        self.smooth = SmoothingFunction().method1
        self.best_bleu = 0.0

    def on_epoch_end(self, epoch, logs=None):
        metrics = self.evaluate(valid_data)
        if metrics["bleu"] > self.best_bleu:
            self.best_bleu = metrics["bleu"]
            model.save_weights("./best_model.weights")
        metrics["best_bleu"] = self.best_bleu
        print("valid_data:", metrics)

    def evaluate(self, data, topk=1):
        """ROUGE-1/2/L F1 and BLEU on space-joined characters."""
        scores = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu": 0.0}
        for title, content in tqdm(data):
            reference = " ".join(title).lower()
            hypothesis = " ".join(autotitle.generate(content, topk)).lower()
            if not hypothesis.strip():
                continue
            rouge = self.rouge.get_scores(hyps=hypothesis, refs=reference)
            for key in ("rouge-1", "rouge-2", "rouge-l"):
                scores[key] += rouge[0][key]["f"]
            scores["bleu"] += sentence_bleu(
                references=[reference.split(" ")],
                hypothesis=hypothesis.split(" "),
                smoothing_function=self.smooth,
            )
        return {key: value / len(data) for key, value in scores.items()}


if __name__ == "__main__":
    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
    )

else:
    model.load_weights("./best_model.weights")
