"""Title generation for Chinese scientific abstracts (CSL), UniLM seq2seq.

Fine-tunes a Chinese BERT as a UniLM model on abstract -> title pairs with
one training strategy against exposure bias, as the published experiments
did (maxlen 256, batch 16, Adam 1e-5, 20 epochs, best epoch by validation
BLEU, test titles by beam search with beam sizes 1, 2 and 3).

Usage:
    python tasks/csl_title.py                      # tiny built-in default
    python tasks/csl_title.py --strategy replace \\
        --model-dir chinese_wwm_L-12_H-768_A-12 \\
        --data ../shared/data/csl_ts/dev.tsv --out runs/csl-replace
"""

import sys

from tasks.lib.seq2seq import main
from tasks.lib.task_defaults import TASK_DEFAULTS

DEFAULTS = TASK_DEFAULTS["csl_title"]

if __name__ == "__main__":
    main(sys.argv[1:], "csl_title", __doc__.split("\n\n")[0], DEFAULTS)
