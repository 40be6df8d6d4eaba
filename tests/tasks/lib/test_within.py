"""tasks/lib/within.py: the calibration's figures from a short run of the
task script (its epochs' recorded wall times)."""

import pytest

from tasks.lib import within


def results(first, second, steps, valid=(1.0, 0.5), test=2.0):
    history = [
        {"epoch": 1, "train": {"seconds": first, "steps": steps}},
        {"epoch": 2, "train": {"seconds": second, "steps": steps}},
    ]
    for entry, seconds in zip(history, valid):
        entry["seconds"] = seconds
    return {"history": history, "test": {"1": {"seconds": test}}}


def test_steady_steps_come_from_the_second_epoch_and_compiling_from_the_first():
    costs = within.epoch_costs(results(25.0, 5.0, 10), 50.0)
    assert costs["step"] == pytest.approx(0.5)
    assert costs["epoch"] == 0.0
    assert costs["compile"] == pytest.approx(25.0 - 10 * 0.5)
    # Wall time less the epochs' training and all decoding.
    assert costs["process"] == pytest.approx(50.0 - 30.0 - 1.5 - 2.0)


def test_an_epochs_set_up_is_apart_from_its_steps_where_they_were_clocked():
    figures = results(25.0, 5.0, 10)
    figures["history"][1]["train"]["step_seconds"] = 0.3
    costs = within.epoch_costs(figures, 50.0)
    assert costs["step"] == pytest.approx(0.3)
    assert costs["epoch"] == pytest.approx(5.0 - 3.0)
    assert costs["compile"] == pytest.approx(25.0 - 3.0 - 2.0)


def test_a_probe_reads_enough_pairs_for_its_steps_and_no_more_than_there_are():
    assert within.probe_pairs(16, 0.8, 1000) == 200
    assert round(200 * 0.8 / 16) == within.PROBE_STEPS
    assert within.probe_pairs(16, 0.8, 90) == 90
    flags = within.probe_flags(200)
    assert flags[:4] == ["--limit", "200", "--epochs", "2"]


def test_steps_timed_apart_are_scaled_as_the_first_strategys_real_run():
    steps, compiles = within.through_pipeline(
        {"baseline": 0.2, "gp": 0.5},
        {"baseline": 4.0, "gp": 10.0},
        "baseline",
        real_step=0.3,
        real_compile=12.0,
    )
    assert steps == pytest.approx({"baseline": 0.3, "gp": 0.75})
    assert compiles == pytest.approx({"baseline": 12.0, "gp": 30.0})
