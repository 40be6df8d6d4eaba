"""Statistics over seeds: each strategy's mean and std per beam size, the
best of each beam block, and the entries within noise of it."""

import json
import math
import statistics

from tasks.lib.runs import SCORE_KEYS

# (key in results.json, column title), in the article's column order.
COLUMNS = tuple(zip(SCORE_KEYS, ("Rouge-L", "Rouge-1", "Rouge-2", "BLEU")))
NOISE_MARK = "†"
# After a strategy whose test titles collapsed (few distinct) in some run.
COLLAPSED_MARK = "‡"
NOISE_RULE = (
    f"{NOISE_MARK}: the gap to the block's best mean is at most one pooled "
    "seed std, sqrt(((n1-1)s1^2 + (n2-1)s2^2) / (n1+n2-2)), of the two "
    "entries (defined once either has two seeds): one more seed could swap "
    "them. A noise heuristic, not a significance test."
)
# Fields that must agree across runs, or the table compares unlike things.
SHARED_FIELDS = ("data", "model", "scoring")


def aggregate(runs: list[dict]) -> list[dict]:
    """Mean and std over seeds per strategy and beam, ordered in blocks.

    `runs` are `Run.record()`s. Blocks follow beam size; strategies keep
    the order they first appear in, so the caller decides (baseline
    first, as the article).
    """
    check_unique_seeds(runs)
    strategies = list(dict.fromkeys(group_name(run) for run in runs))
    beams = sorted({int(beam) for run in runs for beam in run["test"]})
    rows = []
    for beam in beams:
        for strategy in strategies:
            group = [
                run
                for run in runs
                if group_name(run) == strategy and str(beam) in run["test"]
            ]
            if group:
                rows.append(_row(beam, group))
    _mark_blocks(rows)
    return rows


def group_name(run: dict) -> str:
    """The row a run is averaged into: its label, and its model family
    unless BERT's (one strategy on two families is two rows)."""
    family = run.get("family", "bert")
    label = run.get("label", run.get("strategy"))
    return label if family == "bert" else f"{label} [{family}]"


def check_unique_seeds(runs: list[dict]) -> None:
    """Two runs of one strategy and seed would be counted twice."""
    seen = {}
    for run in runs:
        key = (group_name(run), run["seed"])
        if key in seen:
            raise ValueError(
                f"strategy {key[0]!r} seed {key[1]} in both {seen[key]} "
                f"and {run['dir']}"
            )
        seen[key] = run["dir"]


def _row(beam: int, group: list[dict]) -> dict:
    """Statistics of one strategy (on one model family) at one beam."""
    tests = [run["test"][str(beam)] for run in group]
    row = {
        "beam": beam,
        "strategy": group[0]["label"],
        "family": group[0].get("family", "bert"),
        "seeds": [run["seed"] for run in group],
        "n": len(group),
    }
    for key, _ in COLUMNS:
        row[key] = stats([test[key] for test in tests])
    # Runs whose titles collapsed (`evaluation.evaluate`): their scores
    # can look fine while the model says one thing to every input.
    row["collapsed"] = sum(bool(test.get("collapsed")) for test in tests)
    if all("seconds" in test for test in tests):
        row["seconds"] = stats([test["seconds"] for test in tests])
    return row


def stats(values: list[float]) -> dict:
    """Mean and sample std (ddof=1); std is None for a single seed."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def _mark_blocks(rows: list[dict]) -> None:
    """Flag each block's best cell per column, and cells within noise."""
    for beam in {row["beam"] for row in rows}:
        block = [row for row in rows if row["beam"] == beam]
        for key, _ in COLUMNS:
            best = max(block, key=lambda row: row[key]["mean"])
            for row in block:
                cell = row[key]
                # Ties as displayed are all best: readers see equal numbers.
                cell["best"] = shown(cell["mean"]) == shown(best[key]["mean"])
                cell["within_noise"] = not cell["best"] and _within_noise(
                    cell, row["n"], best[key], best["n"]
                )


def _within_noise(cell: dict, n: int, best: dict, n_best: int) -> bool:
    """Is the gap to the best at most one pooled seed std of the two?"""
    if n + n_best <= 2:
        return False
    sum_squares = sum(
        (count - 1) * (entry["std"] or 0.0) ** 2
        for entry, count in ((cell, n), (best, n_best))
    )
    pooled = math.sqrt(sum_squares / (n + n_best - 2))
    return best["mean"] - cell["mean"] <= pooled


def shown(fraction: float) -> str:
    """A score as the table shows it: x100, two decimals."""
    return f"{100 * fraction:.2f}"


def seeds_by_strategy(runs: list[dict]) -> dict[str, list]:
    """Seeds of each strategy (label), in the order strategies appear."""
    seeds = {}
    for run in runs:
        seeds.setdefault(group_name(run), []).append(run["seed"])
    return {strategy: sorted(values) for strategy, values in seeds.items()}


def consistency_problems(runs: list[dict]) -> list[str]:
    """Fields that differ across runs: such numbers are not comparable.

    Data are compared by checksum, not path, so a moved file still agrees.
    """
    problems = []
    for field in SHARED_FIELDS:
        if field == "model":
            differs = model_differs(runs)
        else:
            values = {
                json.dumps(comparable(run, field), sort_keys=True)
                for run in runs
            }
            differs = len(values) > 1
        if differs:
            problems.append(f"runs differ in {field!r}")
    return problems


def model_differs(runs: list[dict]) -> bool:
    """Runs of one model family on different models. Families differ in
    model by definition: comparing them is what the Family column is
    for."""
    models = {}
    for run in runs:
        family = run.get("family", "bert")
        models.setdefault(family, set()).add(json.dumps(run.get("model")))
    return any(len(found) > 1 for found in models.values())


def comparable(run: dict, field: str):
    """What must agree: files by checksum (a moved file still agrees), and
    a split recipe without its seed, which follows each run's seed."""
    value = run.get(field, "unknown")
    if field != "data" or not isinstance(value, dict):
        return value
    return {name: _comparable_entry(info) for name, info in value.items()}


def _comparable_entry(info):
    if not isinstance(info, dict):
        return info
    if "sha256" in info:
        return info["sha256"]
    return {key: v for key, v in info.items() if key != "seed"}
