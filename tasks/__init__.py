"""Runnable experiments: each file here is a script (`python tasks/NAME.py
--help`); what they share is the package `tasks.lib`.

Every script imports this package before Keras, so this is where the
backend's start-up chatter is silenced (`tasks.lib.cli.quiet`; `--verbose`
keeps it)."""

from tasks.lib.cli import quiet

quiet()
