"""tasks/lib/budget.py: the plan of `reproduce.py --within`, as a pure
function of given timings."""

import itertools

import pytest

from tasks.lib import budget
from tasks.lib.budget import Target
from tasks.lib.budget import Timings
from tasks.lib.reproduce_within import ARTICLE

STRATEGIES = ["baseline", "replace", "gp"]


def timings(scale=1.0):
    """A CPU-like calibration: gp's step 2.5x baseline's."""
    return Timings(
        process=8.0,
        compile={"baseline": 6.0, "replace": 7.0, "gp": 15.0},
        step={"baseline": 0.4 * scale, "replace": 0.45 * scale, "gp": scale},
        decode={1: 0.05 * scale, 2: 0.08 * scale, 3: 0.1 * scale},
        decode_compile=4.0,
        calibration=40.0,
    )


def target(**least):
    return Target(
        strategies=STRATEGIES,
        seeds=[0, 1, 2],
        epochs=20,
        pairs=1000,
        valid=100,
        beams=[1, 2, 3],
        batch_size=16,
        **least,
    )


def test_a_run_costs_its_steps_decoding_and_start_up():
    t = timings()
    seconds = budget.run_seconds(t, target(), "gp", 2, 100, 10, [1, 3])
    steps = 5  # 80 training pairs, batch 16
    expected = 8.0 + 15.0 + 4.0  # process, compile, decoder compile
    expected += 2 * (steps * 1.0 + 10 * 0.05)  # epochs: steps, validation
    expected += 10 * (0.05 + 0.1)  # test pairs at beams 1 and 3
    assert seconds == pytest.approx(expected)
    # An epoch's set-up (its data pipeline) counts once an epoch.
    t.epoch = 3.0
    again = budget.run_seconds(t, target(), "gp", 2, 100, 10, [1, 3])
    assert again == pytest.approx(expected + 2 * 3.0)


@pytest.mark.parametrize(
    "seconds, scale", itertools.product([120, 600, 1800, 7200, 10**6], [0.2, 1])
)
def test_a_plan_never_exceeds_its_seconds_unless_nothing_fits(seconds, scale):
    t, goal = timings(scale), target(min_epochs=1, min_pairs=60, min_valid=6)
    fit = budget.plan_finetune(seconds, t, goal)
    least = budget.grid_seconds(t, goal, [("baseline", 0)], 1, 60, 6, [1])
    if least <= seconds:
        assert fit["seconds"] <= seconds
    else:
        assert fit["runs"] == [["baseline", 0]]
    # The runs are a prefix of the article's order: every strategy with
    # seed 0 before any seed 1.
    order = budget.run_order(STRATEGIES, [0, 1, 2])
    assert [tuple(run) for run in fit["runs"]] == order[: len(fit["runs"])]
    assert sum(fit["run_seconds"].values()) == pytest.approx(
        fit["seconds"], abs=0.5
    )


def test_a_plan_uses_most_of_its_seconds_where_it_can_grow():
    t, goal = timings(), target(min_epochs=1, min_pairs=60, min_valid=6)
    for seconds in (600, 1800, 3600):
        fit = budget.plan_finetune(seconds, t, goal)
        assert fit["seconds"] >= 0.8 * seconds, (seconds, fit)


def test_the_three_strategies_come_before_a_second_seed_and_epochs_grow():
    goal = target(min_epochs=1, min_pairs=60, min_valid=6, min_seeds=2)
    small = budget.plan_finetune(200, timings(), goal)
    assert [run[0] for run in small["runs"]] == STRATEGIES
    noisy = budget.plan_finetune(1000, timings(), goal)
    assert len(noisy["runs"]) == 6 and noisy["epochs"] > 1
    full = budget.plan_finetune(10**6, timings(), goal)
    assert len(full["runs"]) == 9
    assert (full["epochs"], full["pairs"], full["beams"]) == (
        20,
        1000,
        [1, 2, 3],
    )


def test_the_whole_plan_keeps_the_calibration_and_a_margin():
    t, goal = timings(), target(min_epochs=1, min_pairs=60, min_valid=6)
    plan = budget.plan_pipeline(1800, 60, t, goal, pretrain_share=0.3)
    stages = plan["stages"]
    assert sum(stages.values()) == pytest.approx((1800 - 60) * 0.95, abs=0.2)
    assert stages["model"] == pytest.approx(0.3 * ((1740 * 0.95) - 20), 0.01)
    assert plan["finetune"]["seconds"] <= stages["finetune"]


def test_cuts_name_what_the_plan_leaves_out():
    t, goal = timings(), target(min_epochs=1, min_pairs=60, min_valid=6)
    plan = budget.plan_pipeline(300, 40, t, goal)
    lines = budget.cuts(plan, goal, ARTICLE)
    text = "\n".join(lines)
    assert "runs not made: " in text and "gp seed 2" in text
    assert "epochs: " in text and "(article: 20)" in text
    assert "training pairs: " in text and "(article: 3000)" in text
    full = budget.plan_pipeline(10**7, 40, t, goal)
    assert "runs not made" not in "\n".join(budget.cuts(full, goal, ARTICLE))


def test_timings_survive_json():
    t = timings()
    assert budget.Timings.from_json(t.to_json()) == t


# --- re-planning between runs -------------------------------------------------


def fit_of(runs, epochs=4):
    return {
        "runs": [list(run) for run in runs],
        "epochs": epochs,
        "pairs": 1000,
        "valid": 50,
        "beams": [1],
    }


def cost(t, strategy, epochs=4):
    return budget.run_seconds(t, target(), strategy, epochs, 1000, 50, [1])


def test_a_replan_starts_only_runs_that_fit_in_order():
    t = timings()
    fit = fit_of([("baseline", 0), ("replace", 0), ("gp", 0)])
    room = cost(t, "baseline") + cost(t, "replace") + 0.5 * cost(t, "gp")
    start = budget.runs_to_start(fit, [], room, 1.0, t, target())
    assert start == [("baseline", 0), ("replace", 0)]
    # Runs slower than predicted (scale 2) leave less room: gp's would
    # overrun and is not started.
    after = budget.runs_to_start(
        fit,
        [["baseline", 0], ["replace", 0]],
        cost(t, "gp") * 1.5,
        2.0,
        t,
        target(),
    )
    assert after == []


def test_time_left_over_goes_into_the_articles_further_runs():
    t = timings()
    fit = fit_of([("baseline", 0), ("replace", 0), ("gp", 0)])
    finished = fit["runs"]
    room = sum(cost(t, strategy) for strategy in STRATEGIES) + 1.0
    # Runs quicker than predicted (scale 0.5): two more seed groups fit.
    start = budget.runs_to_start(fit, finished, room, 0.5, t, target())
    assert start == budget.run_order(STRATEGIES, [1, 2])
    slower = budget.runs_to_start(fit, finished, room, 1.0, t, target())
    assert slower == budget.run_order(STRATEGIES, [1])
    everything = budget.runs_to_start(fit, finished, 10**9, 1.0, t, target())
    assert everything == budget.run_order(STRATEGIES, [0, 1, 2])[3:]
    # A planned run unfinished comes before any further one.
    partial = budget.runs_to_start(fit, finished[:1], 10**9, 1.0, t, target())
    assert partial[:2] == [("replace", 0), ("gp", 0)]
