"""tasks/reproduce.py: argument checks, and the --smoke pipeline end to end
(slow): every stage, a table per stage in REPORT.md, the published rows,
and a run killed after its first stages resuming where it stopped."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tasks import reproduce
from tasks.lib import pretraining_plan
from tasks.lib import published
from tasks.lib import reproduce_report
from tasks.lib import reproduce_stages
from tests.common import CSL_CORPUS
from tests.common import ROOT
from tests.common import require_shared


def test_unknown_strategies_are_refused_and_new_ones_accepted(monkeypatch):
    from models import strategies

    with pytest.raises(SystemExit, match="unknown strategies.*'nope'"):
        reproduce.check_strategies(["baseline", "nope"])
    # Strategies registered after this script was written are accepted.
    monkeypatch.setitem(
        strategies.STRATEGIES, "later", strategies.STRATEGIES["baseline"]
    )
    reproduce.check_strategies(["baseline", "later"])


def test_help_shows_each_real_default_once():
    parser = reproduce.build_parser()
    formatter = parser._get_formatter()
    shown = {
        action.dest: formatter._expand_help(action)
        for action in parser._actions[1:]
    }
    for dest, text in shown.items():
        assert text, dest
        for wrong in ("None", "True", "False", "[]"):
            assert f"(default: {wrong})" not in text
        assert len(re.findall(r"\bdefault\b", text)) <= 1, text
    assert shown["strategies"].endswith("(default: baseline replace gp)")
    assert shown["out"].endswith("(default: runs/reproduce)")


def google_dir(tmp_path):
    directory = tmp_path / "chinese_wwm"
    directory.mkdir()
    for name in ("bert_config.json", "vocab.txt", "bert_model.ckpt.index"):
        (directory / name).write_text("{}")
    return directory


def test_google_checkpoint_without_tensorflow_says_how_to_convert(
    tmp_path, monkeypatch
):
    directory = google_dir(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name == "tensorflow" else find_spec(name),
    )
    with pytest.raises(SystemExit) as error:
        reproduce_stages.check_model_dir(directory)
    message = str(error.value)
    assert "TensorFlow is not installed" in message
    assert (
        f"python -m weights.convert {directory / 'bert_model.ckpt'} "
        f"{directory / 'model.safetensors'}" in message
    )


def test_a_missing_peer_is_a_note_not_a_failure(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name == "torch" else find_spec(name),
    )
    assert reproduce_stages.peer_problem("gpu") == (
        "not measured: torch not installed (pip install torch transformers)"
    )


def test_incomplete_model_dir_is_refused_before_any_stage(tmp_path):
    directory = google_dir(tmp_path)
    (directory / "vocab.txt").unlink()
    with pytest.raises(SystemExit, match="no vocab.txt"):
        reproduce_stages.check_model_dir(directory)
    (directory / "bert_model.ckpt.index").unlink()
    with pytest.raises(SystemExit, match="no checkpoint"):
        reproduce_stages.check_model_dir(directory)
    with pytest.raises(SystemExit, match="not a directory"):
        reproduce_stages.check_model_dir(tmp_path / "absent")


def test_arguments_after_dashes_go_to_every_fine_tuning_run(tmp_path):
    data = tmp_path / "pairs.tsv"
    data.write_text("t\tc\n")
    args = reproduce.parse_args(
        ["--smoke", "--data", str(data), "--", "--beams", "1"]
    )
    assert args.finetune_extra == ["--beams", "1"] and args.seeds == [0]
    assert reproduce.parse_args(["--data", str(data)]).seeds == [0, 1, 2]
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--data", str(tmp_path / "absent.tsv")])


def test_overlap_of_pretraining_text_and_fine_tuning_data_is_counted(
    tmp_path,
):
    data = tmp_path / "pairs.tsv"
    data.write_text("title one\tcontent one\ntitle two\tcontent two\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("content two\nother text\ntitle one \n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n")
    args = reproduce.parse_args(
        ["--data", str(data), "--corpus", str(corpus), "--vocab", str(vocab)]
    )
    line = reproduce.Reproduction(args, []).corpus_overlap()
    assert "holds 1 of the 2 fine-tuning sources and 1 of their titles" in (
        line
    )


def test_pretraining_steps_come_from_the_measured_step(tmp_path):
    run = tmp_path / "calibration"
    run.mkdir()
    lines = [
        {"step": 10, "loss": 9.0, "tokens_per_s": 100.0},  # compiling
        {"step": 20, "loss": 8.0, "tokens_per_s": 4000.0},
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    state = {"step": 20, "tokens": 20 * 2000, "checkpoint": None}
    (run / "state.json").write_text(json.dumps(state))
    # 2,000 tokens a step at 4,000 tokens/s: half a second a step.
    assert pretraining_plan.measured_step_seconds(run, 20) == 0.5
    argv = ["--text", "a", "--vocab", "v.txt", "--layers", "2"]
    assert pretraining_plan.without_flags(argv, {"--vocab"}) == [
        "--text",
        "a",
        "--layers",
        "2",
    ]


def test_report_has_a_table_for_stages_that_did_not_run():
    state = {
        "settings": {"smoke": False},
        "invocations": [
            {"time": "t", "backend": "jax", "command": "python x --y"}
        ],
        "stages": {
            "benchmark-train": {
                "status": "unavailable",
                "reason": "no GPU: the training benchmark runs at BERT-base",
            }
        },
    }
    text = reproduce_report.render(state, ROOT)
    sections = section_texts(text)
    assert list(sections) == list(reproduce_report.SECTION_TITLES.values())
    for body in sections.values():
        assert "| status | reason |" in body
    assert "| unavailable | no GPU: the training benchmark" in text
    assert "commit `?`, KERAS_BACKEND=jax: `python x --y`" in text


def test_data_counts_are_those_the_runs_used(tmp_path):
    """60 pairs split 80/10/10 with --valid-limit 6, as the smoke runs
    read them: 48 / 6 / 6, from what the run recorded."""
    import argparse

    from tasks.lib.splits import load_splits

    data = tmp_path / "pairs.tsv"
    lines = [f"{i}\t标题{i}\t摘要{i}摘要" for i in range(100)]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = argparse.Namespace(
        data=data,
        train=None,
        limit=60,
        valid_fraction=0.1,
        test_fraction=0.1,
        seed=0,
        valid_limit=6,
        format="auto",
        skip_bad_lines=False,
    )
    (train, valid, test), info = load_splits(args)
    assert (len(train), len(valid), len(test)) == (48, 6, 6)
    described = reproduce_stages.describe_data({"data": info, "test": {}})
    assert described.startswith("48 train / 6 valid / 6 test pairs of")
    args.valid_limit = 2
    _, info = load_splits(args)
    assert reproduce_stages.describe_data({"data": info}).startswith(
        "48 train / 2 valid / 6 test"
    )


def test_environment_table_lists_each_package_once():
    result = {
        "backend": "jax",
        "backend_version": "0.4",
        "keras_version": "3.9.0",
        "python": "3.12",
        "devices": ["cpu:0"],
        "accelerator": "cpu",
        "precision": "fp32",
        "commit": "abc",
        "packages": {"keras": "3.9.0", "jax": "0.4", "numpy": "2.0"},
    }
    lines = reproduce_report.environment_section(result, ROOT)
    cells = [line.split("|") for line in lines if line.startswith("|")]
    names = [row[1].strip().lower() for row in cells]
    assert names.count("keras") == 1 and names.count("numpy") == 1


def section_texts(report):
    """{title: text} of the report's numbered stage sections."""
    parts = re.split(r"^## \d+\. (.+)$", report, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


# --- the smoke pipeline, end to end (slow) ----------------------------------


def smoke_env(tmp_path):
    """The test's environment; on JAX, TensorFlow cannot be imported, as
    on a GPU machine that has JAX and not TensorFlow."""
    env = dict(os.environ)
    if env.get("KERAS_BACKEND") == "jax":
        blocked = tmp_path / "no-tensorflow" / "tensorflow"
        blocked.mkdir(parents=True)
        (blocked / "__init__.py").write_text(
            "raise ImportError('tensorflow is not installed here')\n"
        )
        env["PYTHONPATH"] = os.pathsep.join(
            [str(blocked.parent), env.get("PYTHONPATH", str(ROOT))]
        )
    return env


def stage_status(out, name):
    path = out / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return state["stages"].get(name, {}).get("status")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Kill the smoke pipeline once its benchmarks are done, then run the
    same command again to the end; both outputs and the folder."""
    require_shared(CSL_CORPUS / "abstracts.txt")
    tmp_path = tmp_path_factory.mktemp("reproduce")
    out = tmp_path / "out"
    command = [sys.executable, "tasks/reproduce.py", "--smoke"]
    command += ["--out", str(out)]
    env = smoke_env(tmp_path)
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while stage_status(out, "benchmark-decode") != "done":
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "benchmarks took over 5 min"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
    killed = json.loads((out / "state.json").read_text())
    second = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    return {"out": out, "killed": killed, "second": second.stdout}


@pytest.mark.slow
def test_smoke_killed_run_resumes_where_it_stopped(smoke_run):
    out, killed = smoke_run["out"], smoke_run["killed"]
    first_stages = ["environment", "benchmark-train", "benchmark-decode"]
    assert [killed["stages"][name]["status"] for name in first_stages] == [
        "done"
    ] * 3
    assert killed["stages"].get("compare") is None
    state = json.loads((out / "state.json").read_text())
    for name in first_stages:
        assert (
            f"== {name}: done in an earlier run, skipped"
            in (smoke_run["second"])
        )
        # Not run again: the record is the first run's.
        assert state["stages"][name] == killed["stages"][name]
    assert [record["status"] for record in state["stages"].values()] == [
        "done"
    ] * 6
    assert len(state["invocations"]) == 2


@pytest.mark.slow
def test_smoke_report_has_every_stage_and_the_published_rows(smoke_run):
    out = smoke_run["out"]
    report = (out / "REPORT.md").read_text()
    sections = section_texts(report)
    assert list(sections) == list(reproduce_report.SECTION_TITLES.values())
    for title, body in sections.items():
        assert "| --- |" in body or "|---:|" in body, title
        assert "| status | reason |" not in body, title
    assert "**Smoke run**" in report
    assert "Command: `python tasks/benchmark.py train" in report
    # Our baseline step beside the peer's (ms/step, tokens/s: numbers;
    # the ratio is printed to 3 significant digits, 1.2e+03 included).
    number = r"[0-9.]+(?:e\+[0-9]+)?"
    assert re.search(
        rf"^\| 4 \| baseline \| gathered \| off \| {number} \| 1\.00 \|.*"
        rf"\| {number} \| {number} \| n/a \| {number} \|$",
        report,
        re.M,
    )
    assert "identical titles" in report and "| NO |" not in report
    assert "![pretraining loss](model/loss.png)" in report
    assert (out / "model" / "loss.png").stat().st_size > 5000
    # Every strategy of the article, measured and published, beams 1-3.
    comparison = sections["Comparison with the published figures"]
    for strategy, beam, rouge_l, rouge_1, rouge_2, bleu in published.TABLES[
        "csl"
    ]:
        assert (
            f"| {beam} | {strategy} (published) | 2 runs (published) "
            f"| {rouge_l:.2f} | {rouge_1:.2f} | {rouge_2:.2f} | {bleu:.2f} |"
        ) in comparison
        # ‡: the toy runs' titles collapse, and the table says so.
        assert re.search(
            rf"^\| {beam} \| {strategy}(?: ‡)? \| 1 \|", comparison, re.M
        )
    assert "Rows marked (published)" in comparison
    assert "- epochs: here 1; published 20" in comparison
    assert "- pretraining: on the CSL corpus here, whose text holds" in (
        comparison
    )
    for name in ("table.md", "table.csv", "results.json", "metrics.png"):
        assert (out / "comparison" / name).is_file()
    assert re.search(r"`[0-9a-f]{64}` \| 1000 \|", report)  # dev.tsv sha256
    # The split the runs used (--limit 60, --valid-limit 6).
    assert "48 train / 6 valid / 6 test pairs of dev.tsv" in comparison
    assert len(re.findall(r"^\| keras \|", report, re.M | re.I)) == 1


# --- --within ---------------------------------------------------------------


def test_plan_section_states_the_plan_the_cuts_and_each_stage_against_it():
    from tasks.lib import budget
    from tasks.lib import reproduce_within
    from tests.tasks.test_budget import target
    from tests.tasks.test_budget import timings

    goal = target(min_epochs=1, min_pairs=60, min_valid=6)
    plan = budget.plan_pipeline(300, 50, timings(), goal)
    result = {
        "size": "smoke",
        "shape": {
            **reproduce_within.SIZES["smoke"]["shape"],
            "maxlen": 64,
            "title_maxlen": 8,
            "batch": 8,
        },
        "plan": plan,
        "cuts": budget.cuts(plan, goal, reproduce_within.ARTICLE),
    }
    state = {
        "settings": {"smoke": True, "within": 5},
        "invocations": [],
        "stages": {
            "environment": {"status": "skipped", "seconds": 1.0},
            "plan": {"status": "done", "seconds": 49.0, "result": result},
            "finetune": {
                "status": "unavailable",
                "seconds": 150.0,
                "reason": "stopped early: gp-seed0 not started",
            },
        },
    }
    text = reproduce_report.render(state, ROOT)
    section = text.split("## Plan within the budget")[1].split("## Stages")[0]
    assert "Plan within 5 min (smoke size" in section
    assert "Cut from the article's setting:" in section
    assert "- epochs: 1 (article: 20)" in section
    finetune = plan["stages"]["finetune"]
    assert re.search(
        rf"^\| finetune \| unavailable \| {finetune:.0f} \| 150 \| "
        "stopped early: gp-seed0 not started \\|$",
        section,
        re.M,
    )
    assert "Stages took 200 s in all, of a budget of 300 s" in section


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="planning is Python; the smoke pipeline runs on both backends",
)
def test_a_tiny_budget_still_reports_completely_and_resumes(tmp_path):
    """--within 1 on a CPU: the calibration alone takes most of it; the
    report says what was cut and what did not fit, and the same command
    again keeps the saved plan."""
    require_shared(CSL_CORPUS / "abstracts.txt")
    out = tmp_path / "out"
    command = [sys.executable, "tasks/reproduce.py", "--smoke", "--within"]
    command += ["1", "--out", str(out)]
    env = smoke_env(tmp_path)
    runs = [
        subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Plan within 1 min (smoke size" in runs[0].stdout
    assert "== plan: done in an earlier run, skipped" in runs[1].stdout
    report = (out / "REPORT.md").read_text()
    sections = section_texts(report)
    assert list(sections) == list(reproduce_report.SECTION_TITLES.values())
    assert "## Plan within the budget" in report
    assert "Cut from the article's setting:" in report
    assert "- runs not made: " in report
    assert "cut by --within" in report  # the benchmarks
    state = json.loads((out / "state.json").read_text())
    assert state["stages"]["finetune"]["status"] in ("done", "unavailable")
    assert len(state["invocations"]) == 2
