"""A trained model ready to title new abstracts: a finished run or a model
directory, loaded once, decoded with any `DecodingOptions`.

A run directory (of `tasks/csl_title.py` or `tasks/lcsts_summary.py`)
brings everything: its best weights, vocabulary, lengths (`--maxlen`,
`--title-maxlen`), precision, and the decoding settings it was scored
with (`--min-length`, `--length-penalty`), so its titles are those of its
`predictions-beam*.tsv`. A model directory (Google's or Hugging Face's
layout: a config, `vocab.txt` and a checkpoint) needs the lengths given.
"""

import collections
import dataclasses
import pathlib

import keras

from data import Tokenizer
from data import load_vocab
from data.vocab import SEQ2SEQ_TOKENS
from models import build_transformer_model
from models.config import BertConfig
from models.config import find_config_file
from models.decoding import Seq2SeqDecoder
from models.t5_decoding import T5Decoder
from tasks.lib.abstracts import Title
from tasks.lib.decoding_options import DecodingOptions
from tasks.lib.environment import POLICIES
from tasks.lib.model_files import is_encoder_decoder
from tasks.lib.run_diagnostics import check_run_dir
from tasks.lib.trained_model import load_trained
from weights.formats import resolve

# A model directory's lengths unless given (the CSL task's).
MODEL_DIR_MAXLEN = 256
MODEL_DIR_TITLE_MAXLEN = 32
# Decoders kept, one per (min_length, length_penalty): each compiles its
# own steps, so a server alternating between a few settings keeps them.
KEPT_DECODERS = 8


@dataclasses.dataclass
class Generator:
    """A model, its tokenizer and lengths: texts in, titles out.

    `defaults` are the decoding options a caller starts from (a run's own
    `min_length` and `length_penalty`); `facts` describe the model for
    people (`describe`).
    """

    model: object
    tokenizer: Tokenizer
    maxlen: int
    title_maxlen: int
    defaults: DecodingOptions
    facts: dict
    decoders: collections.OrderedDict = dataclasses.field(
        default_factory=collections.OrderedDict
    )

    @property
    def vocab_size(self) -> int:
        return model_shape(self.model)["vocab_size"]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut as the run cut its sources."""
        source_maxlen = self.maxlen - self.title_maxlen
        return [
            self.tokenizer.encode(text, maxlen=source_maxlen)[0]
            for text in texts
        ]

    def decoder(self, options: DecodingOptions) -> Seq2SeqDecoder:
        key = (options.min_length, options.length_penalty)
        if key in self.decoders:
            self.decoders.move_to_end(key)
        else:
            lengths = {"maxlen": self.title_maxlen}
            if hasattr(self.model, "t5_network"):
                # The encoder's sources, cut as the run cut them.
                lengths["max_source_len"] = self.maxlen - self.title_maxlen
            decoder_class = (
                T5Decoder
                if hasattr(self.model, "t5_network")
                else Seq2SeqDecoder
            )
            self.decoders[key] = decoder_class(
                self.model,
                end_id=self.tokenizer.end_id,
                minlen=options.min_length,
                length_penalty=options.length_penalty,
                **lengths,
            )
            while len(self.decoders) > KEPT_DECODERS:
                self.decoders.popitem(last=False)
        return self.decoders[key]

    def generate(
        self,
        texts: list[str],
        options: DecodingOptions,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> list[list[Title]]:
        """Titles per text: the `nbest` best of a beam search (the
        decoder's answer first, then the other complete titles by score),
        or `n` samples. Rows never mix, so a text's titles do not depend
        on the texts decoded beside it (sampling's draws do)."""
        sources = self.encode(texts)
        decoder = self.decoder(options)
        if options.sample:
            samples = decoder.sample_batch(
                sources,
                options.n,
                options.topk,
                options.topp,
                options.seed,
                progress=progress,
                batch_size=batch_size,
            )
            return [[Title(self.text(ids), None) for ids in s] for s in samples]
        nbest = decoder.beam_search_batch(
            sources,
            options.beams,
            nbest=True,
            progress=progress,
            batch_size=batch_size,
        )
        return [
            [Title(self.text(ids), score) for ids, score in n[: options.nbest]]
            for n in nbest
        ]

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> dict:
        """What the model is, for `/info` and the start-up line."""
        return {
            **self.facts,
            **model_shape(self.model),
            "parameters": self.model.count_params(),
            "maxlen": self.maxlen,
            "title_maxlen": self.title_maxlen,
            "backend": keras.backend.backend(),
        }


def model_shape(model) -> dict:
    """Layers (a T5's: encoder's), width, heads and vocabulary size."""
    t5 = getattr(model, "t5_config", None)
    if t5 is not None:
        layers, hidden, heads = t5.num_layers, t5.d_model, t5.num_heads
        return dict(
            family=t5.model_type,
            layers=layers,
            hidden=hidden,
            heads=heads,
            vocab_size=t5.vocab_size,
        )
    config = model.bert_config
    return dict(
        family=config.model_type,
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        vocab_size=config.vocab_size,
    )


def is_run_dir(directory: pathlib.Path) -> bool:
    """A task script's `--out` (a model directory has neither file)."""
    return any(
        (directory / name).is_file()
        for name in ("results.json", "best.weights.h5", "state.json")
    )


def load_generator(
    path, maxlen: int | None = None, title_maxlen: int | None = None
) -> Generator:
    """A finished run or a model directory, ready to decode.

    `maxlen` and `title_maxlen` apply to a model directory only (default
    256 and 32): a run decodes with the lengths it was trained with.
    Raises FileNotFoundError / ValueError with a one-line message.
    """
    directory = pathlib.Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise ValueError(
            f"{directory}: not a directory; expected a run directory or "
            "a model directory (config, vocab.txt, checkpoint)"
        )
    if is_run_dir(directory):
        if maxlen is not None or title_maxlen is not None:
            raise ValueError(
                f"{directory}: a run decodes with its own --maxlen and "
                "--title-maxlen (in its config.json); give them for a "
                "model directory only"
            )
        return load_run(directory)
    return load_model_dir(
        directory,
        maxlen or MODEL_DIR_MAXLEN,
        title_maxlen or MODEL_DIR_TITLE_MAXLEN,
    )


def load_run(directory: pathlib.Path) -> Generator:
    """A finished run's best model, tokenizer and recorded settings.

    The one place that loads a run for decoding.
    """
    run, args = check_run_dir(directory)
    model, tokenizer = load_trained(run, args)
    environment = run.results.get("environment") or {}
    facts = {
        "origin": "run",
        "path": str(directory),
        "strategy": run.results.get("strategy"),
        "best_epoch": run.results.get("best_epoch"),
        "precision": environment.get("precision", "fp32"),
    }
    defaults = DecodingOptions(
        min_length=args.min_length, length_penalty=args.length_penalty
    )
    lengths = args.maxlen, args.title_maxlen
    return Generator(model, tokenizer, *lengths, defaults, facts)


def load_model_dir(
    directory: pathlib.Path, maxlen: int, title_maxlen: int
) -> Generator:
    """config (`config.json` / `bert_config.json`), `vocab.txt` and a
    checkpoint, read as `tasks/csl_title.py --model-dir` reads them
    (vocabulary simplified to the tokens a title can use)."""
    where = f"{directory}: not a run directory (no results.json) nor a model"
    try:
        config_path = find_config_file(directory)
        _, checkpoint = resolve(directory)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{where} directory: {error}") from None
    if is_encoder_decoder(config_path):
        raise ValueError(
            f"{directory}: a T5 / mT5 model directory; fine-tune it with "
            "tasks/csl_title.py --model-dir first and decode that run "
            "(its own directory)"
        )
    vocab = directory / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{where} directory: no vocab.txt")
    config = BertConfig.from_json(config_path)
    if not 0 < title_maxlen < maxlen <= config.max_position_embeddings:
        raise ValueError(
            f"--maxlen {maxlen}, --title-maxlen {title_maxlen}: expected "
            f"0 < title-maxlen < maxlen <= {config.max_position_embeddings} "
            f"(max_position_embeddings in {config_path})"
        )
    token_dict, keep_tokens = load_vocab(
        str(vocab), simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    model = build_transformer_model(
        str(config_path),
        str(checkpoint),
        application="unilm",
        keep_tokens=keep_tokens,
        dtype=POLICIES["fp32"],
    )
    facts = {
        "origin": "model directory",
        "path": str(directory),
        "checkpoint": str(checkpoint),
        "precision": "fp32",
    }
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    return Generator(
        model, tokenizer, maxlen, title_maxlen, DecodingOptions(), facts
    )
