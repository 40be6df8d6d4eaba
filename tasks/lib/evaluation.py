"""Decoding and scoring a seq2seq model: titles by beam search in batches,
their ROUGE and BLEU against the references, and the predictions file of
each test beam size."""

import time

from tasks.lib.atomic import atomic_write_text
from tasks.lib.metrics import MIN_DISTINCT_FRACTION
from tasks.lib.metrics import score_titles
from tasks.lib.metrics import warn_if_collapsed


def decode_titles(decoder, tokenizer, contents, beam, args) -> list[str]:
    """Titles for `contents`, decoded in batches, with a progress bar."""
    source_maxlen = args.maxlen - args.title_maxlen
    sources = [
        tokenizer.encode(text, maxlen=source_maxlen)[0] for text in contents
    ]
    # One call: the decoder sorts all sources by length and batches them.
    ids = decoder.beam_search_batch(
        sources, beam, progress=args.progress, batch_size=args.eval_batch_size
    )
    return [tokenizer.decode(output) for output in ids]


def evaluate(decoder, tokenizer, pairs, beam, args, what="valid"):
    """Decode and score; returns (metrics, predictions). `collapsed`
    says whether the titles collapsed to a few distinct ones (warned)."""
    started = time.perf_counter()
    titles = decode_titles(
        decoder, tokenizer, [c for _, c in pairs], beam, args
    )
    decoded = time.perf_counter()
    metrics = score_titles(titles, [t for t, _ in pairs])
    metrics.update(
        seconds=round(time.perf_counter() - started, 3),
        decode_seconds=round(decoded - started, 3),
        titles=len(pairs),
    )
    fraction = warn_if_collapsed(titles, what=f"{what} predictions")
    metrics["collapsed"] = fraction < MIN_DISTINCT_FRACTION
    metrics["distinct"] = len(set(titles))
    return metrics, titles


def score_test(decoder, tokenizer, test, args, out) -> dict:
    """Metrics per beam size of --beams; each beam's titles go to
    OUT/predictions-beamN.tsv."""
    results = {}
    for beam in args.beams:
        metrics, titles = evaluate(
            decoder, tokenizer, test, beam, args, f"test beam {beam}"
        )
        write_predictions(out / f"predictions-beam{beam}.tsv", test, titles)
        results[str(beam)] = metrics
    return results


def write_predictions(path, pairs, titles) -> None:
    """source, reference and prediction per line, tab-separated."""
    lines = ["source\treference\tprediction"]
    lines += [
        f"{_one_line(c)}\t{_one_line(t)}\t{_one_line(p)}"
        for (t, c), p in zip(pairs, titles)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _one_line(text):
    return " ".join(text.split())
