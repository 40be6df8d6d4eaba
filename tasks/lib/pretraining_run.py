"""A pretraining run of `pretrain.py`: the model to continue (or a fresh
one), the corpus cut into batches, the loop with its log and checkpoints,
and the exported model directory every task fine-tunes.

The command line is `pretraining_options`; the objectives themselves are
`data.pretraining` (batches) and `models.pretraining` (losses, schedule).
"""

import dataclasses
import json
import pathlib
import time

import keras
import numpy as np
from tqdm import tqdm

from data import Tokenizer
from data import load_vocab
from data import pretraining as corpus
from data import save_vocab
from data.vocab import SPECIAL_TOKENS
from models import build_transformer_model
from models.config import BertConfig
from models.config import find_config_file
from models.distribution import data_parallel
from models.distribution import global_batch_check
from models.distribution import initialize_multi_host
from models.distribution import process_share
from models.pretraining import PretrainingTrainer
from models.pretraining import WarmupDecay
from tasks.lib.atomic import append_line
from tasks.lib.atomic import atomic_directory
from tasks.lib.atomic import atomic_write_json
from tasks.lib.atomic import atomic_write_text
from tasks.lib.cli import Diverged
from tasks.lib.cli import fail
from tasks.lib.cli import raise_if_interrupted
from tasks.lib.cli import signals_at_safe_points
from tasks.lib.divergence import diverged
from tasks.lib.divergence import is_finite
from tasks.lib.environment import POLICIES
from tasks.lib.environment import check_gpu_build
from tasks.lib.environment import describe_environment
from tasks.lib.environment import summary_line
from tasks.lib.factory import SIZES
from tasks.lib.factory import flags_config
from tasks.lib.factory import make_optimizer
from tasks.lib.pretraining_options import check_options
from tasks.lib.pretraining_options import unilm_share
from tasks.lib.pretraining_options import warmup_steps
from tasks.lib.rundir import RunDirectory
from weights import save_safetensors

# Written instead of the model when the loss stops being finite.
DIVERGED_FILE = "diverged.json"


def run(args) -> pathlib.Path:
    """Own the run directory (another process writing there stops this
    one at once), check everything, then train; nothing is written before
    the checks (options, files, the run directory's settings, the device,
    the model and the corpus) have passed. Returns the exported model
    directory."""
    # Joining the processes of the run comes before anything uses JAX;
    # alone, `data_parallel(False)` changes nothing.
    initialize_multi_host()
    out = RunDirectory(args.out, create=False)
    with out.owned(), data_parallel(False):
        return run_owned(args, out)


def run_owned(args, out: RunDirectory) -> pathlib.Path:
    """`run`, once `out` is this process's."""
    check_options(args)
    out.refuse_other_settings(vars(args))
    refuse_diverged(out)
    config, checkpoint, vocab = model_paths(args)
    token_dict, keep_tokens = load_simplified_vocab(vocab)
    if checkpoint is None:
        config = fresh_config(args, config, len(token_dict))
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    environment = describe_environment(args.precision)
    check_gpu_build(environment, args.allow_cpu)
    precision = environment["precision"]
    print(f"Device:   {summary_line(environment)}")
    global_batch_check(args.batch_size)  # all devices of all processes
    batches = make_batches(args, tokenizer)
    keras.utils.set_random_seed(args.seed)
    model = build_model(config, checkpoint, keep_tokens, POLICIES[precision])
    print_model(model, checkpoint, args)
    print(f"Run dir:  {out.path}")
    out.create()
    out.record_settings(vars(args))
    atomic_write_json(out / "environment.json", environment)
    trainer = make_trainer(model, args, precision, batches.max_labels)
    state = out.load_state({"step": 0, "tokens": 0})
    if state["checkpoint"]:
        out.restore_checkpoint(trainer, state)
        print(f"Resuming {out.path} after step {state['step']}.")
    trim_log(out, state["step"])
    try:
        # Signals stop it between steps, not inside TensorFlow or jaxlib.
        with signals_at_safe_points():
            state = train(trainer, batches, out, state, args)
    except Diverged as error:
        # Beside the last checkpoint's state, which stays in charge.
        atomic_write_json(out / DIVERGED_FILE, error.details)
        raise
    exported = export_model(model, token_dict, out / "model")
    print(
        f"{state['step']} steps, {state['tokens']} tokens; model "
        f"exported to {exported}"
    )
    return exported


def refuse_diverged(out: RunDirectory) -> None:
    """A run that diverged would only diverge again from its checkpoint."""
    path = out / DIVERGED_FILE
    if path.is_file():
        details = json.loads(path.read_text(encoding="utf-8"))
        raise Diverged(
            f"--out {out.path} holds a run that diverged at "
            f"{details.get('where', '?')} ({path}); start again with "
            "another --out (lower --lr, add --warmup, or train in "
            "--precision fp32)"
        )


def model_paths(args):
    """(config, checkpoint, vocab) of --init, each None when not found."""
    if not args.init:
        return args.config, None, args.vocab
    init = pathlib.Path(args.init)
    folder = init if init.is_dir() else init.parent
    config = args.config
    if config is None:
        try:
            config = str(find_config_file(folder))
        except FileNotFoundError:
            fail(
                f"--init {init}: no config.json or bert_config.json "
                "beside it; give --config"
            )
    vocab = args.vocab or (
        str(folder / "vocab.txt") if (folder / "vocab.txt").is_file() else None
    )
    return config, str(init), vocab


def load_simplified_vocab(vocab):
    """`(token_dict, keep_tokens)` of the simplified vocabulary.

    [MASK] is kept (the simplification drops bracketed tokens otherwise).
    """
    if vocab is None:
        fail("give --vocab (or an --init directory holding vocab.txt)")
    return load_vocab(vocab, simplified=True, startswith=SPECIAL_TOKENS)


def fresh_config(args, config, vocab_size) -> BertConfig:
    """A fresh model's config: the shape flags', with BERT's dropout
    (BertConfig's default); a --config given without --init keeps that
    file's other settings (activation, dropout, ...)."""
    shape = flags_config(
        args,
        vocab_size,
        max_positions=max(512, args.seq_len),
        dropout=BertConfig.hidden_dropout_prob,
    )
    if config is None:
        return shape
    sizes = {name: getattr(shape, name) for name in SIZES}
    return dataclasses.replace(BertConfig.from_json(config), **sizes)


def build_model(config, checkpoint, keep_tokens, dtype):
    """The UniLM model of `config` (a file or a `BertConfig`): with a
    checkpoint, its weights, their vocabulary rows sliced by keep_tokens."""
    return build_transformer_model(
        config,
        checkpoint,
        application="unilm",
        keep_tokens=keep_tokens,
        dtype=dtype,
    )


def print_model(model, checkpoint, args) -> None:
    shape = model.bert_config
    print(
        f"Model:    {'continuing ' + checkpoint if checkpoint else 'fresh'}: "
        f"{shape.num_hidden_layers} layers, {shape.hidden_size} hidden, "
        f"vocab {shape.vocab_size}; objective {args.objective}"
        f"{' (whole word)' if args.whole_word else ''}"
    )


def make_batches(args, tokenizer):
    """Read, tokenize and pack/cut the corpus; the batches of every step."""
    started = time.perf_counter()
    texts = corpus.read_documents(args.text, args.limit)
    if not texts:
        fail(
            f"--text {' '.join(args.text)}: no documents (every line is "
            "blank); expected one document a line"
        )
    ratio = unilm_share(args)
    documents = corpus.encode_documents(
        texts, tokenizer, whole_word=args.whole_word and ratio < 1
    )
    start, end = tokenizer.start_id, tokenizer.end_id
    rows = pairs = None
    if ratio < 1:
        rows = corpus.pack_documents(documents, args.seq_len, start, end)
    if ratio > 0:
        source_len = args.seq_len - 3 - args.target_len
        rng = np.random.default_rng([args.seed, 1])
        pairs = [
            pair
            for ids, _ in documents
            for pair in corpus.cut_pairs(ids, rng, source_len, args.target_len)
        ]
    masking = {
        "vocab_size": tokenizer.vocab_size,
        "mask_id": tokenizer.mask_id,
        "rate": args.mask_rate,
        "special_ids": [tokenizer.unk_id, start, end],
    }
    batches = corpus.PretrainingBatches(
        rows,
        pairs,
        args.steps,
        args.batch_size,
        args.seq_len,
        masking,
        start,
        end,
        unilm_ratio=ratio,
        seed=args.seed,
    )
    if not (rows is not None and len(rows[0])) and not pairs:
        fail(
            f"--text {' '.join(args.text)}: nothing to train on after "
            f"tokenizing {len(texts)} documents (no packed rows, no "
            "UniLM pairs); expected longer documents or a shorter --seq-len"
        )
    print(
        f"Data:     {len(texts)} documents, "
        f"{sum(len(d[0]) for d in documents)} "
        f"tokens: {0 if rows is None else len(rows[0])} packed rows, "
        f"{len(pairs or [])} UniLM pairs "
        f"({time.perf_counter() - started:.1f}s)"
    )
    return batches


def make_trainer(model, args, precision, max_predictions):
    """AdamW on the warm-up + decay schedule, as BERT was pretrained."""
    optimizer = keras.optimizers.AdamW(
        WarmupDecay(args.lr, warmup_steps(args), args.steps, args.decay),
        weight_decay=args.weight_decay,
        beta_2=0.98,
        epsilon=1e-6,
        global_clipnorm=1.0,
    )
    # BERT decays no bias nor LayerNorm parameter.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    trainer = PretrainingTrainer(
        model,
        seed=args.seed,
        max_predictions=max_predictions,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    trainer.compile(optimizer=make_optimizer(optimizer, precision))
    return trainer


def trim_log(out, step):
    """Drop log lines written after the checkpoint we resume from."""
    path = out / "log.jsonl"
    if path.exists():
        lines = [
            line
            for line in path.read_text("utf-8").splitlines()
            if json.loads(line)["step"] <= step
        ]
        atomic_write_text(path, "".join(f"{line}\n" for line in lines))


class Meter:
    """Mean loss per objective and tokens/s over one log interval."""

    def __init__(self):
        self.losses, self.tokens = {}, 0
        self.started = time.perf_counter()

    def add(self, objective, loss, tokens):
        self.losses.setdefault(objective, []).append(loss)
        self.tokens += tokens

    def entry(self, step):
        seconds = time.perf_counter() - self.started
        losses = {
            f"{k}_loss": round(float(np.mean(v)), 4)
            for k, v in sorted(self.losses.items())
        }
        every = [x for v in self.losses.values() for x in v]
        return {
            "step": step,
            "loss": round(float(np.mean(every)), 4),
            **losses,
            "tokens_per_s": round(self.tokens / seconds, 1),
        }


def train(trainer, batches, out, state, args):
    """The loop: one batch a step, log, checkpoint; returns the state."""
    bar = tqdm(
        range(state["step"], args.steps),
        initial=state["step"],
        total=args.steps,
        unit="step",
        disable=not args.progress,
    )
    meter = Meter()
    for step in bar:
        batch = batches[step]
        # Of several processes, each trains on its rows of the batch.
        logs = trainer.train_on_batch(*process_share(batch), return_dict=True)
        if not is_finite(logs["loss"]):
            kept = (
                f"the checkpoint {state['checkpoint']['weights']} is kept"
                if state.get("checkpoint")
                else "no checkpoint was saved yet"
            )
            where = {"step": step + 1}
            raise diverged(where, logs["loss"], "--warmup", kept)
        tokens = int(np.count_nonzero(batch[0][0]))
        meter.add(batches.objective(step), logs["loss"], tokens)
        state["step"], state["tokens"] = step + 1, state["tokens"] + tokens
        if state["step"] % args.log_every == 0 or state["step"] == args.steps:
            entry = meter.entry(state["step"])
            append_line(out / "log.jsonl", json.dumps(entry))
            bar.set_postfix(loss=entry["loss"], tok_s=entry["tokens_per_s"])
            if not args.progress:
                print(json.dumps(entry), flush=True)
            meter = Meter()
        if (
            state["step"] % args.checkpoint_every == 0
            or state["step"] == args.steps
        ):
            out.save_checkpoint(trainer, state, f"step-{state['step']}")
        raise_if_interrupted()
    return state


def export_model(model, token_dict, directory):
    """A model directory every task accepts with `--model-dir`.

    vocab.txt is the simplified vocabulary in model-row order, so it needs
    no keep_tokens; the safetensors hold Google names and no keep_tokens
    either, as their rows already follow vocab.txt.
    """
    directory = pathlib.Path(directory)
    with atomic_directory(directory) as temporary:
        model.bert_config.save(temporary / "config.json")
        save_vocab(str(temporary / "vocab.txt"), token_dict)
        save_safetensors(model, temporary / "model.safetensors")
    return directory
