"""What differs between the seq2seq tasks' command lines: their lengths.

Each task script (`tasks/csl_title.py`, `tasks/lcsts_summary.py`) builds its
parser with its entry here, and whoever reads a finished run rebuilds the
same parser from the task the run names, so that options added since the
run took default values as that task's script gives them.
"""

TASK_DEFAULTS = {
    "csl_title": {"maxlen": 256, "title_maxlen": 32},
    # LCSTS texts are under 140 characters and summaries under about 30.
    "lcsts_summary": {"maxlen": 192, "title_maxlen": 32},
}
