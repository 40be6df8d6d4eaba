"""Short-text summarisation of Chinese news (LCSTS), UniLM seq2seq.

The same machinery as `csl_title.py` on LCSTS pairs in the CLGE format
(`summary<TAB>text`, one pair a line): a strategy against exposure bias,
validation by BLEU each epoch, test scores at every beam size.

Usage:
    python tasks/lcsts_summary.py                  # tiny built-in default
    python tasks/lcsts_summary.py --strategy gp --model-dir MODEL \\
        --train train.tsv --valid valid.tsv --test test.tsv
"""

import sys

from tasks.lib.seq2seq import main
from tasks.lib.task_defaults import TASK_DEFAULTS

DEFAULTS = TASK_DEFAULTS["lcsts_summary"]

if __name__ == "__main__":
    main(sys.argv[1:], "lcsts_summary", __doc__.split("\n\n")[0], DEFAULTS)
