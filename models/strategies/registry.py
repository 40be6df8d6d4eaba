"""Strategies by name: `STRATEGIES`, `get(name, **options)`, `register`.

Every strategy of the toolkit is listed here, in the order they were
added (which `tasks/benchmark.py` keeps when it times them all); the
command line reads their names from `names.STRATEGY_NAMES` without
importing Keras, and a test keeps the two equal.
"""

from models.strategies.adversarial import FGM
from models.strategies.adversarial import PGD
from models.strategies.adversarial import VAT
from models.strategies.base import Baseline
from models.strategies.gradient_penalty import GradientPenalty
from models.strategies.professor import Professor
from models.strategies.rdrop import RDrop
from models.strategies.replacement import Replace
from models.strategies.scheduled_sampling import ScheduledSampling
from models.strategies.sequence import MinimumRisk
from models.strategies.sequence import Oracle
from models.strategies.sequence import SelfCritical
from models.strategies.teaforn import TeaForN

STRATEGIES = {
    cls.name: cls
    for cls in (
        Baseline,
        Replace,
        GradientPenalty,
        TeaForN,
        ScheduledSampling,
        FGM,
        PGD,
        VAT,
        RDrop,
        Professor,
        SelfCritical,
        MinimumRisk,
        Oracle,
    )
}


def register(cls):
    """Class decorator: make `cls` available as `get(cls.name)`."""
    STRATEGIES[cls.name] = cls
    return cls


def get(name, **options):
    """A strategy by name, e.g. `get('replace', token_rate=0.3)`."""
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[name](**options)
