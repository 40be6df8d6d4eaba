"""Training strategies against exposure bias, one short class each.

A strategy overrides at most two hooks of the step, both written with
`keras.ops` so they run unchanged on every backend and inside a compiled
step:

- `prepare_batch(token_ids, segment_ids, seed_generator)` returns the
  `(inputs, segment_ids)` the model reads. Labels are always the original
  `token_ids`: a corrupted input still has to predict the true next token.
- `loss(trainer, batch)` returns `(objective, {figure: value})`, reading
  of the trainer only what `base.Trainer` lists (passes and losses at the
  scored target positions, gradients, E read as another value, the seed
  generator, the step counter).

Figures named in `metric_names` are logged as Keras metrics; a figure given
as `(value, measured)` counts only in the steps where `measured` is 1. A
strategy that trains a part of its own (professor's discriminator) creates
it in `build(trainer)`, which the trainer holds as `trainer.strategy_state`
and a run saves and restores with its checkpoints. Strategies are
dataclasses: their options are fields, validated on creation, and
`dataclasses.asdict(strategy)` records them in reports.

One module per family: `base` (`Baseline`, the batch and trainer a
strategy sees), `replacement` (`replace`), `gradient_penalty` (`gp`),
`teaforn`, `scheduled_sampling` (`scheduled`), `adversarial` (`fgm`,
`pgd`, `vat`), `rdrop`, `professor`, `sequence` (`scst`, `mrt`,
`oracle`); `registry` names them all (`STRATEGIES`, `get`), `names` lists
their names without Keras, `options` checks options.

Every public name is importable from here (`from models.strategies import
STRATEGIES, get, Replace`). They load on first use: importing
`models.strategies.names` runs this file too, and must not start Keras.
"""

import importlib

# Public name -> the module of this package that defines it.
_HOMES = {
    "STRATEGY_NAMES": "names",
    "STRATEGIES": "registry",
    "get": "registry",
    "register": "registry",
    "Batch": "base",
    "Trainer": "base",
    "Baseline": "base",
    "feed_previous": "base",
    "parse_floats": "options",
    "Replace": "replacement",
    "draw_from_pool": "replacement",
    "GradientPenalty": "gradient_penalty",
    "TeaForN": "teaforn",
    "topk_embeddings": "teaforn",
    "SCHEDULES": "scheduled_sampling",
    "ScheduledSampling": "scheduled_sampling",
    "sampling_rate": "scheduled_sampling",
    "FGM": "adversarial",
    "PGD": "adversarial",
    "VAT": "adversarial",
    "project": "adversarial",
    "RDrop": "rdrop",
    "Professor": "professor",
    "SelfCritical": "sequence",
    "MinimumRisk": "sequence",
    "Oracle": "sequence",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        module = importlib.import_module(f"{__name__}.{_HOMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_HOMES])
