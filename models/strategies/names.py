"""The names of the toolkit's strategies, importable without Keras.

The command line offers them as `--strategy` choices, and must answer
`--help` and argument errors before a backend starts. Sorted, and equal
to `sorted(STRATEGIES)` (a test checks it).
"""

STRATEGY_NAMES = (
    "baseline",
    "fgm",
    "gp",
    "mrt",
    "oracle",
    "pgd",
    "professor",
    "rdrop",
    "replace",
    "scheduled",
    "scst",
    "teaforn",
    "vat",
)
