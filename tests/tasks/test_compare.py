"""tasks/compare.py on fabricated run directories and a fake task script."""

import csv
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from matplotlib import image

from tasks import compare
from tasks.lib.comparison.report import build_report
from tasks.lib.comparison.statistics import NOISE_MARK
from tasks.lib.comparison.statistics import NOISE_RULE
from tasks.lib.comparison.statistics import consistency_problems
from tasks.lib.rundir import git_commit
from tasks.lib.runs import Run

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = {
    "train": {"path": "data/train.tsv", "sha256": "a" * 64, "pairs": 800},
    "valid": {"path": "data/valid.tsv", "sha256": "b" * 64, "pairs": 100},
    "test": {"path": "data/test.tsv", "sha256": "c" * 64, "pairs": 100},
}
MODEL = "tiny random BERT (2 layers, 64 hidden)"
SCORING = {"summary": "character-level test scoring"}

# strategy, seed -> beam -> (rouge-l, rouge-1, rouge-2, bleu)
SCORES = {
    ("baseline", 0): {1: (0.30, 0.40, 0.20, 0.10), 2: (0.36, 0.45, 0.25, 0.12)},
    ("baseline", 1): {1: (0.32, 0.42, 0.21, 0.11), 2: (0.36, 0.45, 0.25, 0.12)},
    ("baseline", 2): {1: (0.34, 0.44, 0.22, 0.12), 2: (0.36, 0.45, 0.25, 0.12)},
    ("replace", 0): {1: (0.33, 0.35, 0.25, 0.05), 2: (0.30, 0.50, 0.20, 0.10)},
    ("gp", 0): {1: (0.25, 0.30, 0.15, 0.20), 2: (0.37, 0.44, 0.30, 0.15)},
}


def write_run(directory, strategy, seed, beams, **overrides):
    """A results.json in the csl_title.py format."""
    test = {
        str(beam): {
            "rouge-l": rl,
            "rouge-1": r1,
            "rouge-2": r2,
            "bleu": bleu,
            "seconds": 2.5,
            "titles": 100,
        }
        for beam, (rl, r1, r2, bleu) in beams.items()
    }
    run = {
        "strategy": strategy,
        "seed": seed,
        "model": MODEL,
        "data": DATA,
        "commit": "abc1234",
        "scoring": SCORING,
        "best_epoch": 3,
        "test": test,
        **overrides,
    }
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(run))
    return directory


@pytest.fixture
def run_dirs(tmp_path):
    return [
        write_run(tmp_path / f"{s}-seed{n}", s, n, beams)
        for (s, n), beams in SCORES.items()
    ]


@pytest.fixture
def report(run_dirs, tmp_path):
    out = tmp_path / "comparison"
    compare.main([str(d) for d in run_dirs] + ["--out", str(out)])
    return out


def table_rows(markdown):
    """Markdown table rows as lists of cells, keyed by (beam, strategy)."""
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows[int(cells[0]), cells[1]] = cells[2:]
    return rows


def test_table_bolds_best_of_each_block_and_marks_noise(report):
    rows = table_rows((report / "table.md").read_text())
    # Beam 1: baseline 32.00 ± 2.00 is 1.00 below replace's 33.00 and the
    # pooled std of (3 seeds, std 2.00) and (1 seed) is 2.00: within noise.
    assert rows[1, "replace"] == [
        "1",
        "**33.00**",
        "35.00",
        "**25.00**",
        "5.00",
    ]
    # Rouge-2: 21.00 is 4.00 below 25.00, beyond the pooled std of 1.00.
    assert rows[1, "baseline"] == [
        "3",
        "32.00 ± 2.00 †",
        "**42.00 ± 2.00**",
        "21.00 ± 1.00",
        "11.00 ± 1.00",
    ]
    # gp vs replace, one seed each: no noise estimate, so no mark.
    assert rows[1, "gp"] == ["1", "25.00", "30.00", "15.00", "**20.00**"]
    # Beam 2: baseline seeds agree (std 0): a gap of 1 is beyond noise.
    assert rows[2, "gp"] == [
        "1",
        "**37.00**",
        "44.00",
        "**30.00**",
        "**15.00**",
    ]
    assert rows[2, "baseline"][1] == "36.00 ± 0.00"
    assert rows[2, "replace"][2] == "**50.00**"


def test_table_is_grouped_by_beam_in_strategy_order(report):
    rows = list(table_rows((report / "table.md").read_text()))
    assert rows == [
        (1, "baseline"),
        (1, "replace"),
        (1, "gp"),
        (2, "baseline"),
        (2, "replace"),
        (2, "gp"),
    ]


def test_report_header_names_provenance(report):
    markdown = (report / "table.md").read_text()
    assert f"- Report commit: `{git_commit()}`" in markdown
    assert "- Run commits: `abc1234`" in markdown
    assert f"- Model: {MODEL}" in markdown
    assert "- Seeds: baseline: 0, 1, 2; replace: 0; gp: 0" in markdown
    assert "train: `data/train.tsv` sha256 `" + "a" * 64 in markdown
    assert "test: `data/test.tsv` sha256 `" + "c" * 64 in markdown
    assert "- Scoring: character-level test scoring" in markdown
    assert NOISE_RULE in markdown


def test_csv_holds_fractions_and_std(report):
    with open(report / "table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    baseline = rows[0]
    assert (baseline["beam"], baseline["strategy"]) == ("1", "baseline")
    assert baseline["seeds"] == "0 1 2"
    assert float(baseline["rouge-l_mean"]) == pytest.approx(0.32)
    assert float(baseline["rouge-l_std"]) == pytest.approx(0.02)
    assert float(baseline["seconds_mean"]) == pytest.approx(2.5)
    assert rows[1]["rouge-l_std"] == ""  # one seed: no std


def test_json_holds_runs_and_aggregates(report):
    results = json.loads((report / "results.json").read_text())
    assert len(results["runs"]) == 5
    assert results["seeds"] == {
        "baseline": [0, 1, 2],
        "replace": [0],
        "gp": [0],
    }
    first = results["aggregate"][0]
    assert first["rouge-1"]["values"] == [0.40, 0.42, 0.44]
    assert first["rouge-1"]["best"] is True
    assert first["rouge-l"]["within_noise"] is True
    assert results["commit"] == git_commit()


def test_plot_is_a_real_image(report):
    path = report / "metrics.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 800 and height >= 250
    assert path.stat().st_size > 10_000
    assert np.std(pixels) > 0.01  # not a blank canvas


def test_published_rows_close_each_beam_block_labelled(run_dirs, tmp_path):
    out = tmp_path / "with-published"
    compare.main(
        [str(d) for d in run_dirs] + ["--out", str(out), "--published", "csl"]
    )
    markdown = (out / "table.md").read_text()
    rows = table_rows(markdown)
    assert list(rows)[:6] == [
        (1, "baseline"),
        (1, "replace"),
        (1, "gp"),
        (1, "baseline (published)"),
        (1, "replace (published)"),
        (1, "gp (published)"),
    ]
    # The article's figures as printed, never bold nor marked.
    assert rows[1, "gp (published)"] == [
        "2 runs (published)",
        "65.41",
        "67.29",
        "56.64",
        "47.37",
    ]
    assert (3, "baseline (published)") in rows  # beams beyond the runs'
    # Measured marks are unchanged by the far better published rows.
    assert rows[1, "replace"][1] == "**33.00**"
    assert "Rows marked (published)" in markdown and "BERT-wwm" in markdown
    with open(out / "table.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    sources = [(r["strategy"], r["source"]) for r in records[:4]]
    assert sources[2:] == [
        ("gp", "measured"),
        ("baseline (published)", "published"),
    ]
    assert float(records[3]["bleu_mean"]) == pytest.approx(0.4552)
    results = json.loads((out / "results.json").read_text())
    assert results["published"]["setting"]["lr"] == 1e-5
    assert len(results["published"]["rows"]) == 9


def test_single_seed_table_has_no_noise_legend(tmp_path):
    runs = [
        write_run(tmp_path / "a", "baseline", 0, SCORES["baseline", 0]),
        write_run(tmp_path / "b", "gp", 0, SCORES["gp", 0]),
    ]
    report = build_report(runs, tmp_path / "out")
    assert NOISE_MARK not in report["markdown"]
    assert "± " not in report["markdown"]


def test_mixed_data_is_refused_unless_allowed(tmp_path):
    other = {**DATA, "test": {**DATA["test"], "sha256": "d" * 64}}
    runs = [
        write_run(tmp_path / "a", "baseline", 0, SCORES["baseline", 0]),
        write_run(tmp_path / "b", "gp", 0, SCORES["gp", 0], data=other),
    ]
    with pytest.raises(ValueError, match="runs differ in 'data'"):
        build_report(runs, tmp_path / "out")
    report = build_report(runs, tmp_path / "out", allow_mixed=True)
    assert "**Warning: runs differ in 'data'.**" in report["markdown"]
    assert f"- Data (runs {runs[1]}):" in report["markdown"]


def test_moved_data_file_still_agrees(tmp_path):
    moved = {**DATA, "test": {**DATA["test"], "path": "/elsewhere/test.tsv"}}
    runs = [
        write_run(tmp_path / "a", "baseline", 0, SCORES["baseline", 0]),
        write_run(tmp_path / "b", "gp", 0, SCORES["gp", 0], data=moved),
    ]
    assert consistency_problems([Run.load(r).record() for r in runs]) == []


def test_split_seed_follows_run_seed_and_options_split_rows(tmp_path):
    """csl_title.py --data splits one file by the run's seed; other
    strategy options make another row, not another seed."""
    info = {"path": "synthetic (data/synthetic.py)", "pairs": 1200}

    def data(seed):
        split = {"seed": seed, "valid_fraction": 0.1, "test_fraction": 0.1}
        return {"train": info, "valid": info, "test": info, "split": split}

    runs = [
        write_run(
            tmp_path / f"r{n}-{rate}",
            "replace",
            n,
            SCORES["gp", 0],
            data=data(n),
            strategy_options={"token_rate": rate},
        )
        for n in (0, 1)
        for rate in (0.3, 0.5)
    ]
    report = build_report(runs, tmp_path / "out")
    rows = table_rows(report["markdown"])
    assert rows[1, "replace (token_rate=0.3)"][0] == "2"
    assert rows[1, "replace (token_rate=0.5)"][0] == "2"
    assert "sha256 `none`, 1200 pairs" in report["markdown"]
    assert (
        '  - split: {"valid_fraction": 0.1, "test_fraction": 0.1}, '
        "seed = each run's seed" in report["markdown"]
    )
    assert report["problems"] == []


def test_duplicate_seed_and_bad_files_raise(tmp_path):
    runs = [
        write_run(tmp_path / "a", "gp", 0, SCORES["gp", 0]),
        write_run(tmp_path / "b", "gp", 0, SCORES["gp", 0]),
    ]
    with pytest.raises(ValueError, match="seed 0 in both"):
        build_report(runs, tmp_path / "out")
    broken = write_run(tmp_path / "c", "gp", 1, {1: (0.1, 0.1, 0.1, 0.1)})
    run = json.loads((broken / "results.json").read_text())
    del run["test"]["1"]["bleu"]
    (broken / "results.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match=r"c/results.json: test\['1'\] lacks"):
        Run.load(broken)
    with pytest.raises(FileNotFoundError, match="no results.json"):
        Run.load(tmp_path / "missing")


# --run mode with a fake task script -----------------------------------------

FAKE_TASK = textwrap.dedent(
    """
    import argparse, json, pathlib, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    if args.strategy == "boom":
        sys.exit(3)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.strategy == "nan":
        run = {"strategy": "nan", "seed": args.seed, "model": "fake",
               "data": {}, "commit": "fake", "scoring": {},
               "diverged": {"epoch": 1, "step": 3, "loss": "nan",
                            "where": "epoch 1, step 3"}}
        (out / "results.json").write_text(json.dumps(run))
        sys.exit(3)
    with open(out.parent / "calls.log", "a") as log:
        log.write(f"{args.strategy} {args.seed}\\n")
    base = {"baseline": 0.30, "gp": 0.35}[args.strategy] + 0.01 * args.seed
    scores = {"rouge-l": base, "rouge-1": base + 0.1,
              "rouge-2": base - 0.1, "bleu": base - 0.2}
    run = {"strategy": args.strategy, "seed": args.seed, "epochs": args.epochs,
           "model": "fake", "data": {}, "commit": "fake", "scoring": {},
           "best_epoch": 1, "test": {"1": scores, "3": scores}}
    (out / "results.json").write_text(json.dumps(run))
    """
)


@pytest.fixture
def fake_task(tmp_path):
    script = tmp_path / "fake_task.py"
    script.write_text(FAKE_TASK)
    return script


def run_mode(fake_task, workdir, out, strategies=("baseline", "gp")):
    return compare.main(
        ["--run", "--strategies", *strategies, "--seeds", "0", "1"]
        + ["--workdir", str(workdir), "--out", str(out)]
        + ["--task-script", str(fake_task), "--", "--epochs", "2"]
    )


def test_run_mode_runs_each_combination_and_resumes(fake_task, tmp_path):
    workdir = tmp_path / "runs"
    # An earlier, interrupted comparison finished gp seed 1 only.
    subprocess.run(
        [sys.executable, str(fake_task), "--strategy", "gp", "--seed", "1"]
        + ["--out", str(workdir / "gp-seed1"), "--epochs", "2"],
        check=True,
    )
    report = run_mode(fake_task, workdir, tmp_path / "out")
    calls = (workdir / "calls.log").read_text().split("\n")
    assert calls == ["gp 1", "baseline 0", "baseline 1", "gp 0", ""]
    assert [run["epochs"] for run in report["runs"]] == [2, 2, 2, 2]
    assert report["seeds"] == {"baseline": [0, 1], "gp": [0, 1]}
    rows = table_rows(report["markdown"])
    assert rows[3, "gp"][1] == "**35.50 ± 0.71**"
    run_mode(fake_task, workdir, tmp_path / "out")  # all done: no new calls
    assert (workdir / "calls.log").read_text().count("\n") == 4
    assert (tmp_path / "out" / "metrics.png").stat().st_size > 10_000


def test_run_mode_goes_on_past_a_diverged_run(fake_task, tmp_path):
    report = run_mode(
        fake_task, tmp_path / "runs", tmp_path / "out", ["nan", "gp"]
    )
    assert [run["label"] for run in report["diverged"]] == ["nan", "nan"]
    assert report["seeds"] == {"gp": [0, 1]}
    assert "diverged at epoch 1, step 3" in report["markdown"]


def test_run_mode_stops_on_a_failed_run(fake_task, tmp_path):
    with pytest.raises(SystemExit, match="failed .*--strategy boom"):
        run_mode(fake_task, tmp_path / "runs", tmp_path / "out", ["boom"])


def test_run_mode_refuses_a_directory_of_another_run(fake_task, tmp_path):
    write_run(tmp_path / "runs" / "gp-seed0", "baseline", 0, SCORES["gp", 0])
    with pytest.raises(ValueError, match="expected 'gp' seed 0"):
        run_mode(fake_task, tmp_path / "runs", tmp_path / "out", ["gp"])


def test_extra_arguments_need_run_mode(capsys):
    with pytest.raises(SystemExit):
        compare.main(["some/run", "--", "--epochs", "2"])
    assert "only with --run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main([])


def test_script_runs_from_another_directory(run_dirs, tmp_path):
    """`python tasks/compare.py` works from any working directory."""
    script = ROOT / "tasks" / "compare.py"
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "(default: comparison)" in help_text
    assert "Usage:" in help_text
    result = subprocess.run(
        [sys.executable, str(script), *map(str, run_dirs)]
        + ["--out", "report"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "| 1 | replace | 1 | **33.00** |" in result.stdout
    assert (tmp_path / "report" / "table.md").is_file()


def test_run_options_other_than_defaults_make_another_row(tmp_path):
    """--ema, --label-smoothing, --length-penalty, --min-length change the
    numbers: a run with other values is another row; the defaults (and
    runs written before these options existed) are the plain strategy."""
    defaults = {
        "label_smoothing": 0.0,
        "ema": None,
        "length_penalty": None,
        "min_length": 1,
    }
    variants = {
        "plain": ("baseline", {}, defaults),
        "old": ("baseline", {}, None),
        "ema": ("baseline", {}, {**defaults, "ema": 0.999}),
        "rdrop": (
            "rdrop",
            {"alpha": 0.7},
            {**defaults, "label_smoothing": 0.1, "length_penalty": 1.0},
        ),
        "vat": ("vat", {}, {**defaults, "min_length": 3}),
    }
    runs = []
    for name, (strategy, strategy_options, options) in variants.items():
        extra = {"options": options} if options is not None else {}
        runs.append(
            write_run(
                tmp_path / name,
                strategy,
                0 if name != "old" else 1,
                SCORES["gp", 0],
                strategy_options=strategy_options,
                **extra,
            )
        )
    rows = table_rows(build_report(runs, tmp_path / "out")["markdown"])
    assert rows[1, "baseline"][0] == "2"
    assert (1, "baseline (ema=0.999)") in rows
    assert (
        1,
        "rdrop (alpha=0.7, label_smoothing=0.1, length_penalty=1.0)",
    ) in rows
    assert (1, "vat (min_length=3)") in rows


def test_a_diverged_run_is_listed_apart_not_averaged(run_dirs, tmp_path):
    diverged = tmp_path / "gp-seed1"
    write_run(diverged, "gp", 1, {}, test={})
    results = json.loads((diverged / "results.json").read_text())
    del results["test"]
    results["diverged"] = {
        "epoch": 2,
        "step": 7,
        "loss": "nan",
        "where": "epoch 2, step 7",
    }
    (diverged / "results.json").write_text(json.dumps(results))
    out = tmp_path / "comparison"
    report = compare.main(
        [str(d) for d in [*run_dirs, diverged]] + ["--out", str(out)]
    )
    rows = table_rows(report["markdown"])
    assert all(
        row[0] == "1" for (_, strategy), row in rows.items() if strategy == "gp"
    )
    assert (
        f"- `{diverged}` (gp, seed 1): diverged at epoch 2, step 7 (loss nan)"
        in report["markdown"]
    )
    saved = json.loads((out / "results.json").read_text())
    assert [run["dir"] for run in saved["diverged"]] == [str(diverged)]
    assert "NaN" not in (out / "results.json").read_text()
    with pytest.raises(ValueError, match="every run diverged"):
        build_report([diverged], tmp_path / "none")


def test_a_collapsed_run_is_marked(tmp_path):
    dirs = [
        write_run(tmp_path / f"{s}-seed{n}", s, n, beams)
        for (s, n), beams in SCORES.items()
    ]
    results = json.loads((dirs[3] / "results.json").read_text())
    results["test"]["2"]["collapsed"] = True
    (dirs[3] / "results.json").write_text(json.dumps(results))
    report = build_report(dirs, tmp_path / "comparison")
    rows = table_rows(report["markdown"])
    assert (2, "replace ‡") in rows and (1, "replace") in rows
    assert (
        "‡: the test titles collapsed (fewer than half distinct) in "
        "1 of 1 runs of replace at beam 2" in report["markdown"]
    )
    with open(tmp_path / "comparison" / "table.csv", newline="") as handle:
        flags = {
            (r["beam"], r["strategy"]): r["collapsed"]
            for r in csv.DictReader(handle)
        }
    assert flags[("2", "replace")] == "1" and flags[("1", "replace")] == "0"


def test_families_are_rows_of_their_own_with_a_family_column(tmp_path):
    """One strategy and seed on BERT, mT5 and (an older run that names
    its family in its model only) RoFormer: three rows per beam, a Family
    column, and models compared only within a family."""
    beams = SCORES[("baseline", 0)]
    dirs = [
        write_run(tmp_path / "bert", "baseline", 0, beams),
        write_run(
            tmp_path / "mt5", "baseline", 0, beams,
            model="m (mt5, 2+2 layers)", family="mt5",
        ),
        write_run(
            tmp_path / "roformer", "baseline", 0, beams,
            model="random init (roformer, 1 layers, 32 hidden)",
        ),
    ]  # fmt: skip
    report = build_report(dirs, tmp_path / "out")
    assert report["problems"] == []
    rows = [
        (r["beam"], r["strategy"], r["family"]) for r in report["aggregate"]
    ]
    assert rows == [
        (beam, "baseline", family)
        for beam in (1, 2)
        for family in ("bert", "mt5", "roformer")
    ]
    assert set(report["seeds"]) == {
        "baseline",
        "baseline [mt5]",
        "baseline [roformer]",
    }
    header = report["markdown"].split("| Beam")[1].splitlines()[0]
    assert header.split("|")[1:4] == [" Strategy ", " Family ", " Seeds "]
    with open(tmp_path / "out" / "table.csv", newline="") as handle:
        families = [r["family"] for r in csv.DictReader(handle)]
    assert families == ["bert", "mt5", "roformer"] * 2
    # Two mT5 runs on different models are not comparable.
    other = write_run(
        tmp_path / "mt5-other", "baseline", 1, beams,
        model="another (mt5, 8+8 layers)", family="mt5",
    )  # fmt: skip
    runs = [Run.load(d).record() for d in [*dirs, other]]
    assert consistency_problems(runs) == ["runs differ in 'model'"]


def test_a_table_of_bert_runs_has_no_family_column(report):
    assert "Family" not in (report / "table.md").read_text("utf-8")
