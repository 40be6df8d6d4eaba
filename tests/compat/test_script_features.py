"""A bert4keras 0.11-style UniLM script using more of the API, ported.

The two shared examples use a fraction of what bert4keras scripts reach
for. `SCRIPT` below is written the way such scripts are (bert4keras
imports, Keras 2 habits): stacked optimizer extensions with EMA applied in
a callback, a `logits` decoder with states, temperature, top-k/top-p
sampling, an old-style `set_rtype` decoder calling `model.predict`,
`text_segmentate`, `truncate_sequences`, `fit_generator` and `.weights`
file names. It is ported by the documented `sed` line and run twice, as
the examples are: trained as `__main__`, then imported, which loads the
EMA weights its callback saved.
"""

import numpy as np
import pytest

from tests.common import CSL_DEV
from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.compat.scripts import port_text
from tests.compat.scripts import set_values
from tests.compat.scripts import train_then_import

SCRIPT = """\
#! -*- coding: utf-8 -*-
import numpy as np
from bert4keras.backend import keras, K
from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer, load_vocab
from bert4keras.optimizers import Adam, extend_with_weight_decay
from bert4keras.optimizers import extend_with_piecewise_linear_lr
from bert4keras.optimizers import extend_with_exponential_moving_average
from bert4keras.snippets import sequence_padding, open, text_segmentate
from bert4keras.snippets import DataGenerator, AutoRegressiveDecoder
from bert4keras.snippets import truncate_sequences
from keras.models import Model

maxlen = 256
batch_size = 16
epochs = 10
config_path = '/root/bert/bert_config.json'
checkpoint_path = '/root/bert/bert_model.ckpt'
dict_path = '/root/bert/vocab.txt'
data_path = '/root/data/pairs.tsv'


def load_data(filename):
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            title, content = l.strip().split('\\t')
            for text in text_segmentate(content, 60, u'。；，', u'。；，'):
                D.append((title, text))
    return D


data = load_data(data_path)
token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (title, content) in self.sample(random):
            c_ids = tokenizer.encode(content)[0]
            t_ids = tokenizer.encode(title)[0][1:]
            truncate_sequences(maxlen, -2, c_ids, t_ids)
            batch_token_ids.append(c_ids + t_ids)
            batch_segment_ids.append([0] * len(c_ids) + [1] * len(t_ids))
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = K.cast(y_mask[:, 1:], K.floatx())
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.maximum(K.sum(y_mask), K.epsilon())


model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='unilm',
    keep_tokens=keep_tokens,
    dropout_rate=0.1,
)
output = CrossEntropy(2)(model.inputs + model.outputs)
model = Model(model.inputs, output)

AdamW = extend_with_weight_decay(Adam, 'AdamW')
AdamWLR = extend_with_piecewise_linear_lr(AdamW, 'AdamWLR')
AdamEMA = extend_with_exponential_moving_average(AdamWLR, 'AdamEMA')
optimizer = AdamEMA(
    learning_rate=1e-3,
    weight_decay_rate=0.01,
    exclude_from_weight_decay=['Norm', 'bias'],
    lr_schedule={2: 1, 100: 0.1},
    ema_momentum=0.9,
)
model.compile(optimizer=optimizer)


class Writer(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype='logits', use_states=True)
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        probas = self.last_token(model).predict([token_ids, segment_ids])
        return np.log(probas + 1e-8), states + 1

    def generate(self, text, topk=2):
        token_ids, segment_ids = tokenizer.encode(
            text, maxlen=maxlen - self.maxlen
        )
        output_ids = self.beam_search(
            [token_ids, segment_ids], topk=topk, states=0, temperature=0.8
        )
        return tokenizer.decode(output_ids)

    def sample(self, text, n=2, topk=5, topp=0.9):
        token_ids, segment_ids = tokenizer.encode(
            text, maxlen=maxlen - self.maxlen
        )
        results = self.random_sample(
            [token_ids, segment_ids], n, topk=topk, topp=topp, states=0
        )
        return [tokenizer.decode(ids) for ids in results]


writer = Writer(start_id=None, end_id=tokenizer._token_end_id, maxlen=6)


class OldWriter(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.set_rtype('probas')
    def predict(self, inputs, output_ids, step):
        token_ids, segment_ids = inputs
        if step > 0:
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate(
                [segment_ids, np.ones_like(output_ids)], 1
            )
        return model.predict([token_ids, segment_ids])[:, -1]

    def generate(self, text, topk=1):
        token_ids, segment_ids = tokenizer.encode(text, max_length=40)
        return tokenizer.decode(
            self.beam_search([token_ids, segment_ids], topk)
        )


old_writer = OldWriter(start_id=None, end_id=tokenizer._token_end_id, maxlen=6)


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.titles = []

    def on_epoch_end(self, epoch, logs=None):
        optimizer.apply_ema_weights()
        title = writer.generate(data[0][1])
        self.titles.append(title)
        model.save_weights('./ema_model.weights')
        optimizer.reset_old_weights()
        print(u'epoch %s, loss %.4f: %s' % (epoch, logs['loss'], title))


if __name__ == '__main__':

    evaluator = Evaluator()
    train_generator = data_generator(data, batch_size)
    model.fit_generator(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

else:

    model.load_weights('./ema_model.weights')
"""

# What each run decodes: the callback's last title (first run only), the
# beam search and the sampler of `Writer`, the old-style decoder.
DECODE = (
    '{"epoch_titles": g.get("evaluator") and g["evaluator"].titles, '
    '"beam": g["writer"].generate(g["data"][0][1]), '
    '"sample": g["writer"].sample(g["data"][1][1]), '
    '"old": g["old_writer"].generate(g["data"][2][1])}'
)


@pytest.mark.slow
def test_script_using_more_of_the_api(tmp_path, checkpoint):
    rows = require_shared(CSL_DEV).read_text(encoding="utf-8").splitlines()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "".join(
            f"{r.split(chr(9))[2]}\t{r.split(chr(9))[1]}\n" for r in rows[:4]
        ),
        encoding="utf-8",
    )
    script = port_text(SCRIPT, tmp_path / "seq2seq_more.py")
    set_values(
        script,
        [
            (r"^maxlen = 256$", "maxlen = 48"),
            (r"^batch_size = 16$", "batch_size = 8"),
            (r"^epochs = 10$", "epochs = 2"),
            (
                r"'/root/bert/bert_config\.json'",
                repr(str(checkpoint / "bert_config.json")),
            ),
            (
                r"'/root/bert/bert_model\.ckpt'",
                repr(str(checkpoint / "bert_model.ckpt")),
            ),
            (r"'/root/bert/vocab\.txt'", repr(str(VOCAB_DIR / "vocab.txt"))),
            (r"'/root/data/pairs\.tsv'", repr(str(pairs))),
        ],
    )
    work = tmp_path / "work"
    work.mkdir()
    runs = train_then_import(script, work, DECODE)
    (trained, raw), (imported, ema) = runs["trained"], runs["imported"]
    assert len(trained["epoch_titles"]) == 2 and all(trained["epoch_titles"])
    assert (work / "ema_model.weights.h5").is_file()
    # The import loaded the EMA weights the last epoch's callback decoded
    # with: its beam search writes that epoch's title again.
    assert imported["beam"] == trained["epoch_titles"][-1]
    assert any(not np.array_equal(a, b) for a, b in zip(raw, ema))
    assert len(imported["sample"]) == 2 and all(imported["old"])
    assert "epoch 1, loss" in runs["log"]
