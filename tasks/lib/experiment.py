"""The seq2seq experiment shared by `csl_title.py` and `lcsts_summary.py`.

One run: read the pairs, build a UniLM BERT (a real checkpoint, or a tiny
random model on self-made data when none is given), fine-tune it with one
training strategy, evaluate on the validation set after every epoch (beam 1),
keep the best weights by BLEU, and score the test set at every beam size.
Everything goes to `--out`, written atomically; running again with the same
`--out` resumes after the last finished epoch.

The command line is `seq2seq_options`; the model's files `model_files`,
the data `splits`, decoding and scoring `evaluation`, what is printed
`console`. This module is the run loop.
"""

import gc
import json
import time

import keras

from models.backend import check_checkpointing
from models.backend import enable_compilation_cache
from models.backend import fit_input
from models.backend import sync_processes
from models.distribution import data_parallel
from models.distribution import global_batch_check
from models.distribution import initialize_multi_host
from models.distribution import multi_host_requested
from models.distribution import shard_batches
from models.trainer import Seq2SeqTrainer
from tasks.lib.atomic import atomic_save_weights
from tasks.lib.atomic import atomic_write_json
from tasks.lib.cli import Diverged
from tasks.lib.cli import interrupted
from tasks.lib.cli import raise_if_interrupted
from tasks.lib.cli import signals_at_safe_points
from tasks.lib.console import RunProgress
from tasks.lib.console import print_epoch
from tasks.lib.console import print_examples
from tasks.lib.console import print_results
from tasks.lib.console import print_start
from tasks.lib.divergence import StopOnNonFiniteLoss
from tasks.lib.divergence import diverged
from tasks.lib.environment import check_gpu_build
from tasks.lib.environment import describe_environment
from tasks.lib.evaluation import evaluate
from tasks.lib.evaluation import score_test
from tasks.lib.factory import make_optimizer
from tasks.lib.factory import warmup_constant
from tasks.lib.launch import writes
from tasks.lib.metrics import SCORING
from tasks.lib.model_files import resolve_model_files
from tasks.lib.rundir import RunDirectory
from tasks.lib.runs import default_run_dir
from tasks.lib.seq2seq_options import check_options
from tasks.lib.seq2seq_options import fill_training_defaults
from tasks.lib.seq2seq_options import run_options
from tasks.lib.splits import is_tiny_default
from tasks.lib.splits import load_splits
from tasks.lib.strategy_options import given_options
from tasks.lib.strategy_options import make_strategy
from tasks.lib.strategy_options import strategy_options
from tasks.lib.task_models import task_model_for
from tasks.lib.trained_model import save_architecture
from tasks.lib.warm_start import check_init
from tasks.lib.warm_start import describe_init
from tasks.lib.warm_start import load_init_weights

TINY_NOTICE = (
    "No model or data given: running the built-in tiny default (a small "
    "random BERT on synthetic pairs; see --help for real checkpoints and "
    "data)."
)


def run(args, task: str) -> dict:
    """The whole experiment; returns the results dict.

    The run first owns its directory (another process writing there stops
    this one at once). Then everything a user can get wrong is checked, in
    this order, before anything is written: options, the run directory's
    earlier settings (a finished run only says where its results are),
    strategy options, model files, data, the device; then the model is
    built (reading the checkpoint).
    """
    # Joining the processes of the run comes before anything uses JAX.
    initialize_multi_host()
    out = RunDirectory(run_dir(args, task), create=False)
    with out.owned():
        return run_owned(args, task, out)


def run_owned(args, task: str, out: RunDirectory) -> dict:
    """`run`, once `out` is this process's."""
    files = resolve_model_files(args)
    task_model = task_model_for(files)
    fill_training_defaults(args, files)
    check_options(args)
    task_model.check_options(args)
    check_init(getattr(args, "init", None))
    settings = {**vars(args), "task": task}
    out.refuse_other_settings(settings)
    finished = finished_results(out, args)
    if finished is not None:
        return finished
    strategy = make_strategy(args.strategy, args.strategy_option)
    if args.gradient_checkpointing:
        check_checkpointing(strategy)
    config = task_model.load_config(args, files)
    splits, data_info = load_splits(args)
    environment = describe_environment(args.precision)
    check_gpu_build(environment, args.allow_cpu)
    precision = environment["precision"]
    if is_tiny_default(args, files):
        print(TINY_NOTICE)
    if args.compilation_cache:
        if not enable_compilation_cache(args.compilation_cache):
            print("--compilation-cache: only the JAX backend has one")
    with data_parallel(args.data_parallel):
        global_batch_check(args.batch_size)
        if not files.vocab:
            out.create()  # the built-in default writes its vocabulary there
        tokenizer, keep_tokens = task_model.load_tokenizer(
            args, files, out.path
        )
        task_model.check_vocab_fits(files, config, tokenizer, keep_tokens)
        keras.utils.set_random_seed(args.seed)
        model = task_model.build_model(
            args, files, keep_tokens, tokenizer.vocab_size, precision
        )
        if getattr(args, "init", None):
            load_init_weights(model, tokenizer, args.init)
        out.create()
        out.record_settings(settings)
        save_architecture(out.path, model, tokenizer)
        trainer = build_trainer(
            model, strategy, args, precision, task_model.trainer_class
        )
        facts = {
            "task": task,
            "environment": environment,
            "model": task_model.describe_model(files, model, keep_tokens),
            "family": task_model.family(model),
            "model_sha256": files.sha256,
            "data": data_info,
            "strategy": args.strategy,
            "strategy_options": strategy_options(strategy),
            # What the command line set: comparison rows are labelled by it.
            "strategy_options_given": given_options(strategy, args),
            "options": run_options(args),
        }
        if getattr(args, "init", None):
            facts["init"] = describe_init(args.init)
        print_start(facts, out)
        summary = train_and_test(
            args, out, task_model, (model, trainer, tokenizer), splits, facts
        )
    if writes():  # of several processes, the one that wrote the files
        print_results(summary, out)
        print_examples(out / f"predictions-beam{min(args.beams)}.tsv")
    return summary


def finished_results(out: RunDirectory, args) -> dict | None:
    """The results of a run that already ended in `out` (every epoch
    trained, every beam of --beams scored, or diverged), said in one
    line; None when there is work left."""
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(
            f"{path}: damaged ({error}); delete it to score the run again"
        ) from None
    if "diverged" in results:
        raise Diverged(
            f"--out {out.path} holds a run that diverged "
            f"({results['diverged']['where']}); start again with another "
            "--out (lower --lr, add warm-up, or train in --precision fp32)"
        )
    state = out.load_state({"epochs_done": 0})
    scored = set(results.get("test", {}))
    if (
        state.get("epochs_done", 0) < args.epochs
        or not {str(beam) for beam in args.beams} <= scored
    ):
        return None
    print(
        f"{out.path}: this run is finished ({state['epochs_done']} epochs, "
        f"beams {', '.join(sorted(scored))} scored); its results are in "
        f"{path}. Give another --out (or delete {out.path}) to run it again."
    )
    return results


def run_dir(args, task: str) -> str:
    """--out, or the run's default directory."""
    return args.out or default_run_dir(task, args.strategy, args.seed)


def build_trainer(
    model, strategy, args, precision="fp32", trainer_class=Seq2SeqTrainer
):
    """The strategy's trainer (`trainer_class`: the model family's),
    compiled with Adam on the warm-up schedule (with --ema, Keras's moving
    average of the weights)."""
    trainer = trainer_class(
        model,
        strategy,
        seed=args.seed,
        label_smoothing=args.label_smoothing,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    optimizer = keras.optimizers.Adam(
        warmup_constant(args.lr, args.warmup_steps),
        use_ema=args.ema is not None,
        ema_momentum=args.ema or 0.99,
    )
    trainer.compile(optimizer=make_optimizer(optimizer, precision))
    return trainer


def train_and_test(args, out, task_model, built, splits, facts):
    """Train epoch by epoch (resuming), then score the best weights;
    `facts` (what `print_start` shows) go into results.json as they are.
    `built` is the (model, trainer, tokenizer) of the run."""
    model, trainer, tokenizer = built
    train, valid, test = splits
    decoder = task_model.decoder(model, tokenizer, args)
    batches = training_batches(
        trainer, task_model.training_batches(args, tokenizer, train), args
    )
    state = out.load_state({"epochs_done": 0, "best": None, "history": []})
    restore(trainer, out, state)
    for epoch in range(state["epochs_done"], args.epochs):
        try:
            figures = train_one_epoch(trainer, batches, epoch, args)
        except Diverged as error:
            record_divergence(out, state, facts, args, error.details)
            raise
        # With --ema the averaged weights are scored and kept as the best;
        # the checkpoint holds the training weights and the averages.
        with trainer.averaged_weights():
            metrics, _ = evaluate(decoder, tokenizer, valid, 1, args)
            record_epoch(model, out, state, metrics, figures)
        state["epochs_done"] += 1
        out.save_checkpoint(trainer, state, f"epoch-{state['epochs_done']}")
        raise_if_interrupted()
    if state["best"]:
        sync_processes("best weights written")  # by process 0, if several
        model.load_weights(str(out / "best.weights.h5"))
    results = score_test(decoder, tokenizer, test, args, out)
    summary = {
        **facts,
        "seed": args.seed,
        "commit": facts["environment"]["commit"],
        "scoring": SCORING,
        "best_epoch": state["best"]["epoch"] if state["best"] else None,
        "history": state["history"],
        "test": results,
    }
    atomic_write_json(out / "results.json", summary)
    return summary


def training_batches(trainer, batches, args):
    """The family's training batches as this run feeds them."""
    # Before the first step compiles: the MLM head scores this many
    # positions per row, the most targets of a training pair.
    trainer.max_targets = batches.max_targets
    if args.data_parallel or multi_host_requested():
        # Padded to the devices; of several processes', this one's share.
        batches = shard_batches(batches)
    return batches


def restore(trainer, out, state) -> None:
    """Load the weights and optimizer state of the last finished epoch."""
    if not state["checkpoint"]:
        return
    out.restore_checkpoint(trainer, state)
    print(f"Resuming {out.path} after epoch {state['epochs_done']}.")


def train_one_epoch(trainer, batches, epoch, args) -> dict:
    """One epoch of `fit`; its order depends only on (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one. A loss
    that is not finite stops it: `Diverged`, before anything is saved."""
    batches.set_epoch(epoch)
    trainer.check_targets(batches)  # fit sees a tf.data pipeline on TF
    watch, clock = StopOnNonFiniteLoss(), StepClock()
    started = time.perf_counter()
    with signals_at_safe_points():
        history = trainer.fit(
            fit_input(batches),
            epochs=epoch + 1,
            initial_epoch=epoch,
            # The batches come in the order set above.
            shuffle=False,
            verbose=1 if args.progress else 2,
            callbacks=[RunProgress(args.epochs), watch, StopOnSignal(), clock],
        )
    if watch.step is not None:
        # The pipeline `fit` left mid-epoch goes now, while Python can
        # still finalize it (TensorFlow prints errors at exit otherwise).
        del history
        gc.collect()
        kept = (
            f"the checkpoint of epoch {epoch} and the best weights are kept"
            if epoch
            else "nothing was saved"
        )
        where = {"epoch": epoch + 1, "step": watch.step}
        raise diverged(where, watch.loss, "--warmup-steps", kept)
    figures = {k: float(v[-1]) for k, v in history.history.items()}
    # The epoch's wall time through the real pipeline (tf.data, callbacks,
    # compiling in the first epoch): what `reproduce.py --within` plans by.
    figures["seconds"] = round(time.perf_counter() - started, 3)
    figures["steps"] = len(batches)
    if clock.step_seconds() is not None:
        figures["step_seconds"] = round(clock.step_seconds(), 5)
    return figures


class StepClock(keras.callbacks.Callback):
    """A steady step's seconds: from the first step's end to the last's,
    so neither the epoch's set-up nor the first step's compiling count."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def step_seconds(self):
        if len(self.ends) < 2:
            return None
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM stops `fit` after the step it arrived in (see
    `signals_at_safe_points`)."""

    def on_train_batch_end(self, batch, logs=None):
        if interrupted():
            self.model.stop_training = True


def record_divergence(out, state, facts, args, details) -> None:
    """results.json of a run that diverged: what it was, the epochs it
    finished, where it diverged; no scores (comparisons list it apart)."""
    summary = {
        **facts,
        "seed": args.seed,
        "commit": facts["environment"]["commit"],
        "best_epoch": state["best"]["epoch"] if state["best"] else None,
        "history": state["history"],
        "scoring": SCORING,
        "diverged": details,
    }
    atomic_write_json(out / "results.json", summary)


def record_epoch(model, out, state, metrics, figures) -> None:
    """Append the epoch's scores and keep the model's weights if best."""
    epoch = state["epochs_done"] + 1
    entry = {"epoch": epoch, "train": figures, **metrics}
    print_epoch(epoch, metrics)
    state["history"].append(entry)
    if better_epoch(metrics, state["best"]):
        atomic_save_weights(model, out / "best.weights.h5")
        state["best"] = {
            "epoch": epoch,
            "bleu": metrics["bleu"],
            "collapsed": bool(metrics.get("collapsed", False)),
        }


def better_epoch(metrics: dict, best) -> bool:
    """Is this epoch's model better than the kept best? Higher validation
    BLEU (the article's rule), except that titles collapsed to a few
    distinct ones never replace varied ones: a model from scratch writes
    one generic title (`基于…的研究`) early on, and that title's BLEU can
    beat the varied titles of later epochs."""
    if best is None:
        return True
    collapsed = bool(metrics.get("collapsed", False))
    kept_collapsed = bool(best.get("collapsed", False))
    if collapsed != kept_collapsed:
        return kept_collapsed
    return metrics["bleu"] > best["bleu"]
