"""The model families a seq2seq run trains, behind one interface.

A family gives the run loop (`experiment`) what differs between a UniLM
model (BERT, RoBERTa, RoFormer, NEZHA: one stack over source and title)
and an encoder-decoder (T5 v1.1 / mT5): its option checks, config,
tokenizer, model, description, training batches, trainer class and
decoder. `task_model_for(files)` picks the family of the model files.
"""

from data import Seq2SeqBatches
from models.decoding import Seq2SeqDecoder
from models.trainer import Seq2SeqTrainer
from tasks.lib import model_files
from tasks.lib.encoder_decoder import EncoderDecoderTask
from tasks.lib.model_files import ModelFiles


class UniLMTask:
    """A BERT-family model under the UniLM mask (`model_files`)."""

    trainer_class = Seq2SeqTrainer
    load_config = staticmethod(model_files.load_config)
    load_tokenizer = staticmethod(model_files.load_tokenizer)
    check_vocab_fits = staticmethod(model_files.check_vocab_fits)
    build_model = staticmethod(model_files.build_model)
    describe_model = staticmethod(model_files.describe_model)

    @staticmethod
    def check_options(args) -> None:
        """Every strategy and option applies."""

    @staticmethod
    def family(model) -> str:
        return model.bert_config.model_type

    @staticmethod
    def training_batches(args, tokenizer, train):
        """The training pairs in batches padded to --length-multiple,
        sorted by length within windows and shuffled by (seed, epoch)."""
        return Seq2SeqBatches(
            train,
            tokenizer,
            maxlen=args.maxlen,
            batch_size=args.batch_size,
            shuffle=True,
            seed=args.seed,
            bucket=True,
            length_multiple=args.length_multiple,
        )

    @staticmethod
    def decoder(model, tokenizer, args, **options):
        """`Seq2SeqDecoder` with the run's lengths and decoding options."""
        settings = dict(
            minlen=args.min_length, length_penalty=args.length_penalty
        )
        return Seq2SeqDecoder(
            model,
            end_id=tokenizer.end_id,
            maxlen=args.title_maxlen,
            **{**settings, **options},
        )


def task_model_for(files: ModelFiles):
    """The family of the model files: an encoder-decoder or UniLM."""
    return EncoderDecoderTask if files.encoder_decoder else UniLMTask
