"""What a seq2seq run shows on the console: what it is before it trains,
a progress bar counting the run's epochs, the test scores and the first
test titles at the end."""

import keras

from tasks.lib.environment import summary_line
from tasks.lib.splits import SPLITS


def print_start(facts, out) -> None:
    """What this run is, before it trains: device, model, data, strategy
    (every option, defaults included) and where it writes."""
    data = facts["data"]
    print(f"Device:   {summary_line(facts['environment'])}")
    print(f"Model:    {facts['model']}")
    paths = {data[name]["path"] for name in SPLITS}
    source = " + ".join(data[name]["path"] for name in SPLITS)
    source = paths.pop() if len(paths) == 1 else source
    counts = ", ".join(f"{name} {data[name]['pairs']}" for name in SPLITS)
    split = data.get("split")
    how = (
        f"split by seed {split['seed']} (valid {split['valid_fraction']}, "
        f"test {split['test_fraction']})"
        if split
        else "one file per split"
    )
    print(f"Data:     {source}: {counts} pairs; {how}")
    options = ", ".join(
        f"{k}={v}" for k, v in facts["strategy_options"].items()
    )
    print(
        f"Strategy: {facts['strategy']}" + (f" ({options})" if options else "")
    )
    print(f"Run dir:  {out.path}")


class RunProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, its epoch header counting the run's epochs:
    `fit` runs one epoch per call (validation decodes between epochs), so
    Keras's own header would read 'Epoch k/k'."""

    def __init__(self, epochs):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.verbose and self.epochs == 1:
            print("Epoch 1/1")


def print_epoch(epoch, metrics) -> None:
    """One line per epoch: its validation scores."""
    print(
        f"epoch {epoch}: valid "
        + ", ".join(
            f"{k} {metrics[k]:.4f}"
            for k in ("rouge-1", "rouge-2", "rouge-l", "bleu")
        )
    )


def print_results(summary, out) -> None:
    """The test scores per beam size, and where they are written."""
    print(
        f"\nTest results ({summary['strategy']}, best epoch "
        f"{summary['best_epoch']}), written to {out.path}/results.json:"
    )
    print("beam  rouge-1  rouge-2  rouge-l  bleu    seconds")
    for beam, m in summary["test"].items():
        print(
            f"{beam:>4}  {m['rouge-1']:.4f}   {m['rouge-2']:.4f}   "
            f"{m['rouge-l']:.4f}   {m['bleu']:.4f}  {m['seconds']:.1f}"
        )


def print_examples(path, count=3, width=60) -> None:
    """The first `count` test pairs of a predictions file, shortened to
    `width` characters, so the end of a run shows what the model does."""
    lines = path.read_text(encoding="utf-8").splitlines()[1 : count + 1]
    print(f"\nFirst {len(lines)} test titles (all in {path}):")
    for line in lines:
        source, reference, prediction = line.split("\t")
        for label, text in (
            ("source", source),
            ("reference", reference),
            ("prediction", prediction),
        ):
            short = text if len(text) <= width else text[:width] + "…"
            print(f"  {label:<11} {short}")
        print()
