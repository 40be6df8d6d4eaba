"""The plan of `tasks/reproduce.py --within MINUTES`: what fits a budget.

Pure functions of measured timings (`Timings`, from a short calibration:
`tasks/lib/within.py`) and of the setting aimed at (`Target`: the
article's, at the model size the device allows); nothing here runs or
times anything, so the planner is tested on given timings.

A fine-tuning run is predicted to take

    process + compile[strategy] + decode_compile
    + epochs * (steps_per_epoch * step[strategy] + epoch + valid * decode[1])
    + test * sum(decode[beam] for beam in beams)

seconds. The runs are kept in the article's order: its three strategies
with seed 0, then each of them with seed 1, and so on; a plan keeps a
prefix of that order. Cuts are made from the article's setting in a fixed
order (seeds past the minimum, then validation pairs, then beams, then
epochs, then training pairs, then strategies) until the runs fit, and the
time left over goes back into pairs, then epochs, then further runs.
"""

import dataclasses
import math

# What every run of the pipeline costs besides fine-tuning (seconds): the
# comparison (reading runs, scoring tables, the plot) and writing reports.
COMPARE_SECONDS = 20.0
# Share of the time left kept back for what the calibration misses.
MARGIN = 0.05


@dataclasses.dataclass
class Timings:
    """Seconds measured by the calibration at the planned model size."""

    process: float  # starting a fine-tuning process: imports, data
    compile: dict  # {strategy: first steps' compile time}
    step: dict  # {strategy: one training step}
    decode: dict  # {beam: one title, batched}
    decode_compile: float  # the decoder's first call, beyond a warm one
    calibration: float = 0.0  # the calibration itself
    epoch: float = 0.0  # an epoch's set-up besides its steps

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Timings":
        return cls(
            data["process"],
            dict(data["compile"]),
            dict(data["step"]),
            {int(beam): s for beam, s in data["decode"].items()},
            data["decode_compile"],
            data.get("calibration", 0.0),
            data.get("epoch", 0.0),
        )


@dataclasses.dataclass
class Target:
    """The setting aimed at (the article's) and the least a plan keeps."""

    strategies: list  # in the article's order
    seeds: list
    epochs: int
    pairs: int  # pairs read from the data file (train = 80%)
    valid: int  # validation pairs scored each epoch
    beams: list
    batch_size: int
    min_epochs: int = 1
    min_pairs: int = 60
    min_valid: int = 6
    min_seeds: int = 1  # seed groups kept before epochs grow
    train_share: float = 0.8  # of the pairs; test: (1 - share) / 2


def run_order(strategies, seeds) -> list[tuple[str, int]]:
    """(strategy, seed) pairs, every strategy with one seed first."""
    return [(strategy, seed) for seed in seeds for strategy in strategies]


def test_pairs(target: Target, pairs: int) -> int:
    return round(pairs * (1 - target.train_share) / 2)


def run_seconds(timings, target, strategy, epochs, pairs, valid, beams):
    """Predicted wall time of one fine-tuning run."""
    train = round(pairs * target.train_share)
    steps = math.ceil(train / target.batch_size)
    epoch = steps * timings.step[strategy] + valid * timings.decode[1]
    epoch += timings.epoch
    test = test_pairs(target, pairs) * sum(timings.decode[b] for b in beams)
    fixed = timings.process + timings.compile[strategy] + timings.decode_compile
    return fixed + epochs * epoch + test


def grid_seconds(timings, target, runs, epochs, pairs, valid, beams):
    return sum(
        run_seconds(timings, target, strategy, epochs, pairs, valid, beams)
        for strategy, _ in runs
    )


def plan_finetune(seconds: float, timings: Timings, target: Target) -> dict:
    """The fine-tuning grid that fits `seconds`: runs, epochs, pairs,
    validation pairs and beams, with the predicted seconds."""
    order = run_order(target.strategies, target.seeds)
    group = len(target.strategies)
    setting = {
        "epochs": target.min_epochs,
        "pairs": target.min_pairs,
        "valid": min(target.valid, target.min_valid),
        "beams": [min(target.beams)],
    }

    def cost(runs, **changes):
        return grid_seconds(timings, target, runs, **{**setting, **changes})

    # The runs: seed groups at the least setting, up to min_seeds groups,
    # within half the time (the rest grows epochs and pairs); fewer
    # strategies only when one group does not fit at all.
    count = group
    for groups in range(min(target.min_seeds, len(target.seeds)), 1, -1):
        if cost(order[: groups * group]) <= seconds / 2:
            count = groups * group
            break
    while count > 1 and cost(order[:count]) > seconds:
        count -= 1
    runs = order[:count]
    # Restore the article's setting in the reverse order of the cuts.
    for key, value in (("beams", list(target.beams)), ("valid", target.valid)):
        if cost(runs, **{key: value}) <= seconds / 2:
            setting[key] = value
    setting["pairs"] = grow(
        lambda p: cost(runs, pairs=p), target.min_pairs, target.pairs, seconds
    )
    setting["epochs"] = grow(
        lambda e: cost(runs, epochs=e),
        target.min_epochs,
        target.epochs,
        seconds,
    )
    # More runs, in order, while the article's epochs and pairs still fit.
    at_target = (setting["epochs"], setting["pairs"]) == (
        target.epochs,
        target.pairs,
    )
    while (
        at_target
        and len(runs) < len(order)
        and cost(order[: len(runs) + 1]) <= seconds
    ):
        runs = order[: len(runs) + 1]
    return {
        "runs": [list(run) for run in runs],
        **setting,
        "test": test_pairs(target, setting["pairs"]),
        "seconds": round(cost(runs), 1),
        "run_seconds": {
            f"{strategy}-seed{seed}": round(
                run_seconds(timings, target, strategy, **setting), 1
            )
            for strategy, seed in runs
        },
    }


def runs_to_start(fit, finished, seconds, scale, timings, target) -> list:
    """The runs still to start, as (strategy, seed), at the fit's setting:
    its unfinished runs in order, then the article's runs it did not plan
    (time left over goes into them); the longest prefix whose predicted
    times, scaled by `scale` (measured over predicted wall time of the
    runs finished so far), fit `seconds`. Re-planned after each run, so a
    run that would overrun is never started and a run that came in
    early leaves its time to the next."""
    setting = {key: fit[key] for key in ("epochs", "pairs", "valid", "beams")}
    planned = [tuple(run) for run in fit["runs"]]
    done = {tuple(run) for run in finished}
    further = run_order(target.strategies, target.seeds)
    candidates = [run for run in planned if run not in done]
    candidates += [run for run in further if run not in planned]
    chosen, total = [], 0.0
    for strategy, seed in candidates:
        total += scale * run_seconds(timings, target, strategy, **setting)
        if total > seconds:
            break
        chosen.append((strategy, seed))
    return chosen


def grow(cost, least: int, most: int, seconds: float) -> int:
    """The largest integer in [least, most] whose cost fits `seconds`
    (cost increasing); `least` when none does."""
    if cost(most) <= seconds:
        return most
    low, high = least, most
    while high - low > 1:
        middle = (low + high) // 2
        if cost(middle) <= seconds:
            low = middle
        else:
            high = middle
    return low


def plan_pipeline(
    budget_seconds: float,
    spent_seconds: float,
    timings: Timings,
    target: Target,
    pretrain_share: float = 0.0,
) -> dict:
    """The whole plan: seconds for pretraining (a share of what is left,
    none with a given model, nor where that share is under
    `pretrain_least`: the model then starts from random weights),
    fine-tuning and the comparison, within `budget_seconds` of which
    `spent_seconds` are gone (environment and calibration)."""
    left = (budget_seconds - spent_seconds) * (1 - MARGIN)
    compare = COMPARE_SECONDS
    pretrain = max(0.0, (left - compare) * pretrain_share)
    if pretrain < pretrain_least(timings):
        pretrain = 0.0
    finetune_seconds = left - compare - pretrain
    finetune = plan_finetune(finetune_seconds, timings, target)
    return {
        "budget_seconds": budget_seconds,
        "spent_seconds": round(spent_seconds, 1),
        "stages": {
            "model": round(pretrain, 1),
            "finetune": round(finetune_seconds, 1),
            "compare": compare,
        },
        "finetune": finetune,
        "pretrain_cut": pretrain_share > 0 and pretrain == 0,
        "timings": timings.to_json(),
    }


def pretrain_least(timings: Timings) -> float:
    """The least pretraining worth its time: its own calibration and two
    phases each compile once, and must leave room for some steps."""
    return 4 * timings.compile[min(timings.compile)] + timings.process


def cuts(plan: dict, target: Target, article: dict) -> list[str]:
    """What the plan leaves out of the article's setting, one line each."""
    finetune = plan["finetune"]
    lines = []
    kept = {tuple(run) for run in finetune["runs"]}
    dropped = [
        f"{strategy} seed {seed}"
        for strategy, seed in run_order(target.strategies, target.seeds)
        if (strategy, seed) not in kept
    ]
    if dropped:
        lines.append(f"runs not made: {', '.join(dropped)}")
    if plan.get("pretrain_cut"):
        lines.append(
            "pretraining: none (too little time for it); the model starts "
            "from random weights"
        )
    pairs = finetune["pairs"]
    train = round(pairs * target.train_share)
    for name, here, there in (
        ("epochs", finetune["epochs"], article["epochs"]),
        ("beams", finetune["beams"], article["beams"]),
        ("training pairs", train, article["train_pairs"]),
        ("validation pairs", finetune["valid"], article["valid_pairs"]),
        ("test pairs", finetune["test"], article["test_pairs"]),
    ):
        if here != there:
            lines.append(f"{name}: {here} (article: {there})")
    return lines
