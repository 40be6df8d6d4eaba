"""REPORT.md of `tasks/reproduce.py`: one section and table per stage.

Written from the pipeline's state alone (`OUT/state.json`), after every
stage, so an interrupted run still has a report of what it finished.
Every figure sits beside the command that made it; the header names the
device, versions and commit, and the data by sha256.
"""

import pathlib

from tasks.lib.atomic import atomic_write_text
from tasks.lib.markdown import table

TITLE = "# Reproducing the exposure-bias article: CSL title generation"
SMOKE_NOTE = (
    "**Smoke run**: every stage at toy size (a tiny model, a few steps and "
    "pairs, one seed unless --within plans more). It shows that the "
    "pipeline runs end to end; its figures say nothing about speed or "
    "about the strategies."
)


def write(out, state):
    """Render `state` to OUT/REPORT.md; returns the text."""
    out = pathlib.Path(out)
    text = render(state, out)
    atomic_write_text(out / "REPORT.md", text)
    return text


def render(state, out):
    stages = state["stages"]
    environment = stages.get("environment", {}).get("result") or {}
    lines = [TITLE, ""]
    if state["settings"].get("smoke"):
        lines += [SMOKE_NOTE, ""]
    lines += header(state, environment)
    if state["settings"].get("within"):
        from tasks.lib.reproduce_within import plan_section

        lines += ["", *plan_section(state)]
    lines += ["", "## Stages", ""]
    lines += table(
        ["stage", "status", "seconds", "finished (UTC)", "note"],
        [
            [
                name,
                record["status"],
                _number(record.get("seconds")),
                record.get("finished", ""),
                record.get("reason", ""),
            ]
            for name, record in stages.items()
        ],
    )
    for number, (name, render_stage) in enumerate(SECTIONS, 1):
        record = stages.get(name, {"status": "not run yet"})
        lines += ["", f"## {number}. {SECTION_TITLES[name]}", ""]
        if record["status"] != "done":
            lines += table(
                ["status", "reason"],
                [[record["status"], record.get("reason", "")]],
            )
            continue
        lines += render_stage(record["result"], out)
    return "\n".join(lines) + "\n"


def header(state, environment):
    lines = ["Commands (each run of the pipeline, in order):", ""]
    for call in state.get("invocations", []):
        lines.append(
            f"- {call['time']} UTC, commit `{call.get('commit', '?')}`, "
            f"KERAS_BACKEND={call['backend']}: `{call['command']}`"
        )
    if environment:
        lines += [
            "",
            f"Commit `{environment['commit']}`; backend "
            f"{environment['backend']} {environment['backend_version']}, "
            f"Keras {environment['keras_version']}, Python "
            f"{environment['python']}; devices: "
            f"{', '.join(environment['devices'])}; precision "
            f"{environment['precision']}.",
        ]
    return lines


def _number(value, digits=1):
    if value is None:
        return ""
    return f"{value:.{digits}f}"


def _score(value):
    return "" if value is None else f"{100 * value:.2f}"


def command(text):
    return [f"Command: `{text}`", ""]


# --- stages -----------------------------------------------------------------


def environment_section(result, out):
    rows = [
        ["backend", f"{result['backend']} {result['backend_version']}"],
        ["Keras", result["keras_version"]],
        ["Python", result["python"]],
        ["devices", ", ".join(result["devices"])],
        ["accelerator", result["accelerator"]],
        ["precision", result["precision"]],
        ["commit", result["commit"]],
    ]
    if result.get("gpu_build_problem"):
        rows.append(["GPU build", result["gpu_build_problem"]])
    shown = {"keras"}  # its own row above
    rows += [
        [name, version]
        for name, version in result.get("packages", {}).items()
        if version and name not in shown
    ]
    lines = table(["", ""], rows)
    lines += ["", "Data:", ""]
    lines += table(
        ["file", "sha256", "lines"],
        [
            [f"`{item['path']}`", f"`{item['sha256']}`", item["lines"]]
            for item in result.get("data", [])
        ],
    )
    return lines


def train_benchmark_section(result, out):
    lines = command(result["command"])
    lines += result["table"].rstrip("\n").splitlines()
    lines += ["", f"PyTorch peer: {result['peer']}."]
    return lines


def decode_benchmark_section(result, out):
    lines = command(result["command"])
    lines += table(
        [
            "beam",
            "reference sources",
            "recompute titles/s",
            "cached titles/s",
            "speed-up",
            "cached 1st run titles/s (with compile)",
            "identical titles",
        ],
        [
            [
                row["beam"],
                row["ref_n"],
                f"{row['ref']:.2f}",
                f"{row['fast']:.1f}",
                f"{row['fast'] / row['ref']:.0f}x",
                f"{row['first']:.1f}",
                "yes" if row["same"] else "NO",
            ]
            for row in result["rows"]
        ],
    )
    return lines


def model_section(result, out):
    config = result.get("config", {})
    shape = [
        config.get(key)
        for key in (
            "num_hidden_layers",
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
        )
    ]
    lines = table(
        [
            "source",
            "model directory",
            "layers",
            "hidden",
            "heads",
            "ffn",
            "vocab",
        ],
        [[result["source"], f"`{result['model_dir'] or '-'}`", *shape]],
    )
    if result["source"] == "pretrained":
        plan = result["plan"]
        lines += [
            "",
            f"Budget {plan['budget_seconds'] / 60:.1f} min: a "
            f"{plan['calibration_steps']}-step calibration run took "
            f"{plan['calibration_seconds']:.1f} s, "
            f"{1000 * plan['step_seconds']:.1f} ms per step after "
            f"compiling, {plan['overhead_seconds']:.1f} s of set-up; "
            f"{plan['steps_in_budget']} steps fit the budget, "
            f"{plan['steps']} were run"
            + (
                " (clamped to this size's limits)."
                if plan["clamped_to"]
                else "."
            ),
            "",
        ]
        lines += table(
            [
                "phase",
                "steps",
                "first logged loss",
                "last logged loss",
                "tokens/s (last interval)",
                "seconds",
                "command",
            ],
            [
                [
                    phase["name"],
                    phase["steps"],
                    phase["first_loss"],
                    phase["last_loss"],
                    phase["tokens_per_s"],
                    phase["seconds_this_invocation"],
                    f"`{phase['command']}`",
                ]
                for phase in result["phases"]
            ],
        )
        curve = _relative(result["loss_curve"], out)
        lines += ["", f"![pretraining loss]({curve})"]
    lines += ["", "Files:", ""]
    lines += table(
        ["file", "sha256"],
        [
            [f"`{path}`", f"`{digest}`"]
            for path, digest in result["sha256"].items()
        ],
    )
    return lines


def finetune_section(result, out):
    lines = command(result["command"])
    if result.get("precision"):
        lines += [f"Precision: {result['precision']}.", ""]
    beams = sorted(
        {int(beam) for run in result["runs"] for beam in run["test"]}
    )
    titles = ["strategy", "seed", "best epoch", "valid BLEU"]
    titles += [f"test beam {beam} Rouge-L / BLEU" for beam in beams]
    titles += ["run directory"]
    rows = []
    for run in result["runs"]:
        cells = [
            run["strategy"],
            run["seed"],
            f"{run['best_epoch']} of {run['epochs']}",
            _score(run["valid_bleu"]),
        ]
        for beam in beams:
            scores = run["test"].get(str(beam), {})
            rouge, bleu = scores.get("rouge-l"), scores.get("bleu")
            cells.append(f"{_score(rouge)} / {_score(bleu)}")
        cells.append(f"`{_relative(run['dir'], out)}`")
        rows.append(cells)
    lines += table(titles, rows)
    for note in result.get("notes", []):
        lines += ["", f"**{note[0].upper()}{note[1:]}.**"]
    lines += [
        "",
        "Scores x100; each run directory holds its settings (config.json), "
        "per-epoch history and test predictions (results.json, "
        "predictions-beam*.tsv).",
    ]
    return lines


def compare_section(result, out):
    lines = command(result["command"])
    lines += result["table"].rstrip("\n").splitlines()
    lines += ["", *result["legend"].rstrip("\n").splitlines()]
    lines += ["", "Settings here that differ from the article's:", ""]
    lines += [f"- {line}" for line in result["differences"]] or ["- none"]
    lines += ["", "Settings as in the article:", ""]
    lines += [f"- {line}" for line in result["agreements"]] or ["- none"]
    lines += [
        "",
        "Files in `comparison/`: "
        + ", ".join(f"[{name}](comparison/{name})" for name in result["files"]),
        "",
        "![metrics](comparison/metrics.png)",
    ]
    return lines


def _relative(path, out):
    try:
        return str(pathlib.Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


SECTIONS = (
    ("environment", environment_section),
    ("benchmark-train", train_benchmark_section),
    ("benchmark-decode", decode_benchmark_section),
    ("model", model_section),
    ("finetune", finetune_section),
    ("compare", compare_section),
)
SECTION_TITLES = {
    "environment": "Environment",
    "benchmark-train": "Training speed against the PyTorch peer",
    "benchmark-decode": "Decoding speed: cached against recompute",
    "model": "Model",
    "finetune": "Fine-tuning runs",
    "compare": "Comparison with the published figures",
}
