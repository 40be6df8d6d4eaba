"""The `t5` subcommand: mT5 training steps and decoding against
Hugging Face's `MT5ForConditionalGeneration` in PyTorch.

One random mT5 of the given shape is made in PyTorch and written as
safetensors; ours loads that file, so both run the same weights. Timed,
in this process, on the same random batch (no padding):

- a training step: ours `EncoderDecoderTrainer` (baseline strategy, Adam,
  `--steps` steps in one `fit`) against the PyTorch model's forward,
  backward and AdamW step (median of `--steps`);
- decoding `--n` sources to `--maxlen` tokens with greedy search and beam
  search (`--beams`): ours `T5Decoder` (cached, batched; first call with
  compiling and warm call) against `generate` on the whole batch with its
  key/value cache (its second call). No end token: every title is
  `--maxlen` tokens long on both sides. The table says whether the
  titles agree.
"""

import statistics
import tempfile
import time

from tasks.lib.benchmarks.arguments import add_subcommand
from tasks.lib.benchmarks.arguments import print_command
from tasks.lib.options import add_counts
from tasks.lib.options import check_counts

COUNTS = {
    "--layers": (4, 1, "encoder and decoder blocks each"),
    "--d-model": (256, 1, "model width"),
    "--heads": (4, 1, "attention heads"),
    "--d-kv": (64, 1, "width of a head"),
    "--d-ff": (512, 1, "gated feed-forward width"),
    "--vocab": (32128, 2, "vocabulary size"),
    "--batch": (8, 1, "rows per training batch"),
    "--source-len": (128, 1, "source tokens per row"),
    "--target-len": (32, 2, "decoder tokens per row (training)"),
    "--steps": (5, 1, "timed training steps"),
    "--warmup": (2, 1, "untimed training steps first"),
    "--n": (16, 1, "sources decoded"),
    "--maxlen": (32, 1, "tokens decoded per source"),
    "--beams": (3, 1, "beam size of the beam-search rows"),
}


def add_parser(subparsers):
    parser = add_subcommand(
        subparsers,
        "t5",
        "mT5 train step and decoding vs transformers in PyTorch",
        run,
        check_options,
    )
    add_counts(parser, COUNTS)


def check_options(args):
    check_counts(args, COUNTS)


def hf_config(args):
    return dict(
        vocab_size=args.vocab,
        d_model=args.d_model,
        d_kv=args.d_kv,
        d_ff=args.d_ff,
        num_layers=args.layers,
        num_heads=args.heads,
        dropout_rate=0.0,
    )


def make_models(args, directory):
    """(ours, theirs): one random mT5, ours loaded from its safetensors."""
    import torch
    import transformers

    from models.t5 import build_t5_model

    torch.manual_seed(0)
    theirs = transformers.MT5ForConditionalGeneration(
        transformers.MT5Config(**hf_config(args))
    )
    # mT5's output layer is its own (transformers ties it by default).
    theirs.lm_head.weight = torch.nn.Parameter(
        theirs.lm_head.weight.detach().clone()
    )
    theirs.save_pretrained(directory, safe_serialization=True)
    return build_t5_model(hf_config(args), directory), theirs


def batch(args, rows, length, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(2, args.vocab, (rows, length)).astype("int32")


def time_ours_training(args, model, sources, targets):
    """Seconds per step: one `fit` of `--steps` steps over copies of the
    batch, after one of `--warmup` steps (compiling)."""
    import keras
    import numpy as np

    from models.t5_trainer import EncoderDecoderTrainer

    trainer = EncoderDecoderTrainer(model)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))

    def fit(steps):
        data = (np.tile(sources, (steps, 1)), np.tile(targets, (steps, 1)))
        trainer.fit(x=data, batch_size=len(sources), epochs=1, verbose=0)

    fit(args.warmup)
    started = time.perf_counter()
    fit(args.steps)
    return (time.perf_counter() - started) / args.steps


def time_their_training(args, model, sources, targets):
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.tensor(sources, dtype=torch.long)
    decoder = torch.tensor(targets[:, :-1], dtype=torch.long)
    labels = torch.tensor(targets[:, 1:], dtype=torch.long)

    def step():
        loss = model(
            input_ids=inputs, decoder_input_ids=decoder, labels=labels
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    model.eval()
    return statistics.median(times)


def time_ours_decoding(args, model, sources, beams):
    from models.t5_decoding import T5Decoder

    decoder = T5Decoder(model, end_id=-1, maxlen=args.maxlen, bucket=32)
    lists = [list(row) for row in sources]
    started = time.perf_counter()
    decoder.beam_search_batch(lists, topk=beams)
    first = time.perf_counter() - started
    started = time.perf_counter()
    titles = decoder.beam_search_batch(lists, topk=beams)
    return first, time.perf_counter() - started, titles


def time_their_decoding(args, model, sources, beams):
    import torch

    inputs = torch.tensor(sources, dtype=torch.long)

    def generate():
        with torch.no_grad():
            return model.generate(
                inputs,
                do_sample=False,
                num_beams=beams,
                max_new_tokens=args.maxlen,
                min_new_tokens=args.maxlen,
                eos_token_id=None,
            )

    generate()  # warm, as ours
    started = time.perf_counter()
    out = generate()
    return time.perf_counter() - started, out[:, 1:].tolist()


def run(args):
    """Decoding first, while both models hold the same weights; then the
    training steps (which change them, each by its own optimizer)."""
    print_command()
    with tempfile.TemporaryDirectory() as directory:
        ours, theirs = make_models(args, directory)
    rows = [
        decoding_row(args, ours, theirs, beams) for beams in (1, args.beams)
    ]
    sources = batch(args, args.batch, args.source_len, 0)
    targets = batch(args, args.batch, args.target_len, 1)
    targets[:, 0] = 0
    ours_step = time_ours_training(args, ours, sources, targets)
    their_step = time_their_training(args, theirs, sources, targets)
    print(
        f"\nshape: {args.layers}+{args.layers} layers, d_model "
        f"{args.d_model}, {args.heads} heads x {args.d_kv}, d_ff "
        f"{args.d_ff}, vocab {args.vocab}; float32\n"
    )
    print("| what | ours | transformers (PyTorch) | speed ours/theirs |")
    print("|:---|---:|---:|---:|")
    print(
        f"| train step, {args.batch} x ({args.source_len} + "
        f"{args.target_len}) tokens | {ours_step * 1e3:.0f} ms | "
        f"{their_step * 1e3:.0f} ms | {their_step / ours_step:.2f} |"
    )
    print("\n".join(rows))
    return 0


def decoding_row(args, ours, theirs, beams):
    """The table row of decoding `--n` random sources with `beams`."""
    decoded = batch(args, args.n, args.source_len, 2)
    first, warm, titles = time_ours_decoding(args, ours, decoded, beams)
    seconds, their_titles = time_their_decoding(args, theirs, decoded, beams)
    same = "same titles" if titles == their_titles else "titles differ"
    return (
        f"| decode {args.n} x {args.maxlen} tokens, beam {beams} "
        f"({same}) | {args.n / warm:.2f} titles/s warm, "
        f"{args.n / first:.2f} first call | {args.n / seconds:.2f} "
        f"titles/s | {seconds / warm:.2f} |"
    )
