"""`--help` of every script: a help text per option, each real default
shown once, and nothing from the backend's start-up."""

import argparse
import re
import subprocess
import sys

import pytest

from tests.common import ROOT


def parsers():
    """(name, parser) of every script and subcommand."""
    from tasks import compare
    from tasks import diagnose
    from tasks import generate
    from tasks import serve
    from tasks import serve_benchmark
    from tasks.lib import pretraining_options
    from tasks.lib.benchmarks import build_parser as benchmark_parser
    from tasks.lib.seq2seq_options import build_parser
    from weights import convert

    found = [
        ("csl_title", build_parser("t", {"maxlen": 256, "title_maxlen": 32})),
        ("pretrain", pretraining_options.build_parser("t")),
        ("diagnose", diagnose.build_parser()),
        ("generate", generate.build_parser()),
        ("serve", serve.build_parser()),
        ("serve_benchmark", serve_benchmark.build_parser()),
        ("compare", _compare_parser(compare)),
        ("convert", _convert_parser(convert)),
    ]
    top = benchmark_parser()
    found.append(("benchmark", top))
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"benchmark {n}", p) for n, p in action.choices.items()]
    return found


def _compare_parser(compare):
    """compare.parse_args builds its parser inside; catch it on --help."""
    return _parser_of(lambda: compare.parse_args(["--help"]))


def _convert_parser(convert):
    return _parser_of(lambda: convert.parse_args(["--help"]))


def _parser_of(call):
    seen = []
    original = argparse.ArgumentParser.print_help

    def keep(self, file=None):
        seen.append(self)

    argparse.ArgumentParser.print_help = keep
    try:
        with pytest.raises(SystemExit):
            call()
    finally:
        argparse.ArgumentParser.print_help = original
    return seen[0]


PARSERS = parsers()


@pytest.mark.parametrize("name, parser", PARSERS, ids=[n for n, _ in PARSERS])
def test_every_option_has_help_and_shows_a_real_default_once(name, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(
            action, (argparse._HelpAction, argparse._SubParsersAction)
        ):
            continue
        assert action.help, f"{name} {action.dest}: no help text"
        shown = formatter._expand_help(action)
        for wrong in ("None", "True", "False", "[]"):
            assert f"(default: {wrong})" not in shown, (name, shown)
        assert len(re.findall(r"\bdefault\b", shown)) <= 1, (name, shown)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["tasks/csl_title.py"],
        ["tasks/pretrain.py"],
        ["tasks/compare.py"],
        ["tasks/benchmark.py", "train"],
        ["tasks/diagnose.py"],
        ["-m", "weights.convert"],
    ],
)
def test_help_is_quiet(command):
    """No TensorFlow/absl lines before or after the help text."""
    done = subprocess.run(
        [sys.executable, *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("usage:")


# Each one's backend starts in seconds; a script's --help and argument
# errors must not wait for it.
BACKENDS = ("keras", "tensorflow", "jax")


EARLY_ANSWERS = [
    (["tasks/csl_title.py", "--help"], 0),
    (["tasks/lcsts_summary.py", "--help"], 0),
    (["tasks/csl_title.py", "--beams", "x"], 2),
    (["tasks/pretrain.py", "--help"], 0),
    (["tasks/pretrain.py", "--bogus"], 2),
    (["tasks/diagnose.py", "--help"], 0),
]


@pytest.mark.parametrize(
    "command, status",
    EARLY_ANSWERS,
    ids=[" ".join(command) for command, _ in EARLY_ANSWERS],
)
def test_help_and_argument_errors_come_before_any_backend(command, status):
    """Python lists every module it imports (`-X importtime`): none of a
    backend's may be among them."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status, done.stderr[-2000:]
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "argparse" in imported
    backends = [name for name in imported if name.split(".")[0] in BACKENDS]
    assert backends == [], backends[:5]
