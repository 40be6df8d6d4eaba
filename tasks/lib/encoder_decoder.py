"""The seq2seq task on a T5 v1.1 / mT5 encoder-decoder (a `--model-dir`
whose `config.json` names `model_type` t5 or mt5).

The encoder reads the abstract (cut to --maxlen minus --title-maxlen
tokens, as the UniLM runs cut theirs, ending with `</s>`), the decoder
writes the title behind its start token (0), as bert4keras's mT5 CSL
example does; the vocabulary is the directory's `spiece.model`, kept
whole. Training goes through `EncoderDecoderTrainer` (the strategies act
on the decoder's inputs and the shared embedding), decoding through
`T5Decoder`, scoring through the same metrics as every run.

`EncoderDecoderTask` has the methods of `task_models.UniLMTask`, so the
run loop (`experiment`) does not ask which family it trains.
"""

from data import EncoderDecoderBatches
from data import SpTokenizer
from models.t5 import T5Config
from models.t5 import build_t5_model
from models.t5_decoding import T5Decoder
from models.t5_trainer import EncoderDecoderTrainer
from tasks.lib.cli import fail
from tasks.lib.environment import POLICIES
from tasks.lib.model_files import ModelFiles
from tasks.lib.model_files import short_message

# What cannot apply to an encoder-decoder, and why (one line each).
NOT_APPLICABLE = {
    "--gradient-checkpointing": "recomputation is built for the UniLM "
    "stack's blocks, not T5's two stacks",
    "--no-simplify": "the SentencePiece vocabulary is always kept whole "
    "(nothing to simplify)",
}


def sources_maxlen(args) -> int:
    """The encoder's longest source: the UniLM runs' source budget, so
    both families read the same part of each abstract."""
    return args.maxlen - args.title_maxlen


class EncoderDecoderTask:
    """A T5 v1.1 / mT5 directory as the run loop uses a model family."""

    trainer_class = EncoderDecoderTrainer

    @staticmethod
    def check_options(args) -> None:
        """Strategies and options that cannot apply, refused in one line
        before anything is read or trained."""
        if args.strategy in EncoderDecoderTrainer.NOT_BUILT:
            fail(
                f"--strategy {args.strategy}: not built for an encoder-"
                "decoder (it decodes titles inside the training step "
                "through the UniLM network); use a BERT-family model or "
                "another strategy"
            )
        given = {
            "--gradient-checkpointing": args.gradient_checkpointing,
            "--no-simplify": args.no_simplify,
        }
        for option, value in given.items():
            if value:
                fail(f"{option}: not for a T5 model: {NOT_APPLICABLE[option]}")

    @staticmethod
    def load_config(args, files: ModelFiles) -> T5Config:
        try:
            config = T5Config.from_json(files.config)
        except (TypeError, ValueError) as error:
            fail(f"--config {files.config}: {short_message(error)}")
        for name in ("vocab_size", "d_model", "num_layers", "num_heads"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < 1:
                fail(
                    f"{files.config}: {name} is {value!r}; expected a "
                    "positive integer"
                )
        return config

    @staticmethod
    def load_tokenizer(args, files: ModelFiles, out):
        """The SentencePiece tokenizer as bert4keras's mT5 example builds
        it (no start token, `</s>` ending every text); no keep_tokens."""
        try:
            tokenizer = SpTokenizer(
                files.vocab, token_start=None, token_end="</s>"
            )
        except ValueError as error:
            fail(f"--vocab {short_message(error)}")
        return tokenizer, None

    @staticmethod
    def check_vocab_fits(files, config, tokenizer, keep_tokens) -> None:
        if tokenizer.vocab_size > config.vocab_size:
            fail(
                f"--vocab {files.vocab}: {tokenizer.vocab_size} pieces do "
                f"not fit the embedding table of {config.vocab_size} rows "
                f"(vocab_size in {files.config}); expected the spiece.model "
                "the checkpoint was trained with"
            )

    @staticmethod
    def build_model(args, files, keep_tokens, vocab_size, precision):
        try:
            return build_t5_model(
                files.config, files.checkpoint, dtype=POLICIES[precision]
            )
        except (OSError, ValueError) as error:
            fail(f"--checkpoint {files.checkpoint}: {short_message(error)}")

    @staticmethod
    def family(model) -> str:
        return model.t5_config.model_type

    @staticmethod
    def describe_model(files, model, keep_tokens=None) -> str:
        config = model.t5_config
        shape = (
            f"{config.model_type}, {config.num_layers}+"
            f"{config.num_decoder_layers} layers, {config.d_model} hidden, "
            f"{config.num_heads} heads, vocab {config.vocab_size}, "
            f"{model.count_params():,} weights"
        )
        return f"{files.checkpoint} ({shape})"

    @staticmethod
    def training_batches(args, tokenizer, train):
        """Shuffled, bucketed `(source_ids, target_ids)` batches."""
        return EncoderDecoderBatches(
            train,
            tokenizer,
            maxlen=sources_maxlen(args),
            target_maxlen=args.title_maxlen,
            batch_size=args.batch_size,
            shuffle=True,
            seed=args.seed,
            bucket=True,
            length_multiple=args.length_multiple,
        )

    @staticmethod
    def decoder(model, tokenizer, args, **options):
        """`T5Decoder` with the run's lengths and decoding options."""
        settings = dict(
            minlen=args.min_length, length_penalty=args.length_penalty
        )
        return T5Decoder(
            model,
            end_id=tokenizer.end_id,
            maxlen=args.title_maxlen,
            max_source_len=sources_maxlen(args),
            **{**settings, **options},
        )
