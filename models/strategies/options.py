"""Checks of strategy options, run when a strategy is created.

The command line hands options over loosely (`2.0` for a count, `'1,0.5'`
for a list), so the checks accept what it gives and name the option in
their errors.
"""


def check_rate(name, value):
    """A probability, in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_count(name, value) -> int:
    """A positive integer; `2.0` passes (the CLI parses numbers loosely)."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def check_not_negative(name, value):
    """`value >= 0`; NaN fails too."""
    if not value >= 0:
        raise ValueError(f"{name} must not be negative, got {value}")


def parse_floats(name, value) -> tuple:
    """`(1, 0.5)`, `'1,0.5'` or `1` -> floats: the CLI hands lists over as
    comma-separated strings and single numbers as numbers."""
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return tuple(float(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be numbers (e.g. 1,0.5), got {value!r}"
        ) from None
