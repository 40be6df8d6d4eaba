"""The exposure-bias article's published tables, and the setting they had.

Su Jianlin (bojone), "Seq2Seq中Exposure Bias现象的浅析与对策" (kexue.fm,
2020), code in `bojone/exposure_bias`. These figures are the one copy in
the code: reports show them as reference rows beside measured ones, and a
test checks them against the article's tables as transcribed in
`../shared/published/exposure_bias_tables.md`.
"""

SOURCE = (
    'Su Jianlin (bojone), "Seq2Seq中Exposure Bias现象的浅析与对策", '
    "kexue.fm 2020 (code: bojone/exposure_bias)"
)
# Each published figure is the mean of this many runs.
RUNS = 2

# The article's columns, in its order: (strategy, beam, Rouge-L, Rouge-1,
# Rouge-2, BLEU), scores x100.
COLUMNS = ("rouge-l", "rouge-1", "rouge-2", "bleu")
TABLES = {
    "csl": (
        ("baseline", 1, 63.81, 65.45, 54.91, 45.52),
        ("replace", 1, 64.44, 66.09, 55.56, 46.10),
        ("gp", 1, 65.41, 67.29, 56.64, 47.37),
        ("baseline", 2, 64.44, 66.09, 55.75, 46.39),
        ("replace", 2, 65.04, 66.75, 56.51, 47.19),
        ("gp", 2, 65.94, 67.84, 57.38, 48.16),
        ("baseline", 3, 64.75, 66.34, 56.06, 46.70),
        ("replace", 3, 65.15, 66.96, 56.74, 47.42),
        ("gp", 3, 66.10, 68.08, 57.70, 48.56),
    ),
    "lcsts": (
        ("baseline", 1, 27.99, 29.57, 18.04, 11.72),
        ("replace", 1, 28.61, 29.92, 17.72, 11.23),
        ("gp", 1, 30.75, 31.83, 19.38, 11.78),
        ("baseline", 2, 29.20, 30.70, 19.17, 12.64),
        ("replace", 2, 29.15, 30.79, 18.56, 11.75),
        ("gp", 2, 30.88, 32.19, 19.96, 12.32),
        ("baseline", 3, 29.45, 30.95, 19.50, 12.93),
        ("replace", 3, 29.14, 30.88, 18.76, 11.91),
        ("gp", 3, 30.39, 31.76, 19.74, 12.14),
    ),
}

# The setting of the published runs, in the keys `setting_differences`
# compares; `data` per task.
SETTING = {
    "model": "BERT-wwm (chinese_wwm_L-12_H-768_A-12)",
    "maxlen": 256,
    "batch_size": 16,
    "lr": 1e-5,
    "epochs": 20,
    "title_maxlen": 32,
    "selection": "best epoch by validation BLEU",
    "runs": f"mean of {RUNS} runs",
    "strategy_options": {
        "replace": {"sample_rate": 0.5, "token_rate": 0.3},
        "gp": {"epsilon": 1.0},
    },
}
DATA = {
    "csl": "CLGE's CSL split: 3,000 train / 500 valid / 500 test pairs",
    "lcsts": "the LCSTS summarisation set",
}


def reference_rows(task: str) -> list[dict]:
    """The task's published rows in `tasks/compare.py`'s row format
    (fractions, one 'mean' per metric, no std), labelled as published."""
    if task not in TABLES:
        raise ValueError(
            f"no published table for {task!r}; expected one of {sorted(TABLES)}"
        )
    rows = []
    for strategy, beam, *scores in TABLES[task]:
        row = {
            "beam": beam,
            "strategy": f"{strategy} (published)",
            "published_strategy": strategy,
            "n": RUNS,
            "seeds": [],
            "published": True,
        }
        for key, score in zip(COLUMNS, scores):
            row[key] = {"mean": score / 100, "std": None, "values": []}
        rows.append(row)
    return rows


def setting_differences(ours: dict, task: str = "csl") -> tuple[list, list]:
    """(differences, agreements): lines comparing `ours` with the published
    setting, for the keys both give. `ours` may hold SETTING's keys plus
    `data`; values that differ across our runs come as lists."""
    setting = {**SETTING, "data": DATA[task]}
    differences, agreements = [], []
    for key, published in setting.items():
        if key not in ours:
            continue
        mine = ours[key]
        if key == "strategy_options":
            mine = {k: v for k, v in mine.items() if k in published}
            published = {k: v for k, v in published.items() if k in mine}
            if not published:
                continue
        if _same(mine, published):
            agreements.append(f"{key}: {published}")
        else:
            differences.append(f"{key}: here {mine}; published {published}")
    return differences, agreements


def _same(mine, published) -> bool:
    if isinstance(published, float) and isinstance(mine, (int, float)):
        return abs(mine - published) <= 1e-12 * max(1.0, abs(published))
    return mine == published
