"""Runnable experiments: each file here is a script (`python tasks/NAME.py
--help`); what they share is the package `tasks.lib`.

A script imports this package before Keras, so this is where the backend's
start-up chatter is silenced (`tasks.lib.cli.quiet`; `--verbose` keeps
it): only when one of these scripts is the program, never for code that
merely imports `tasks.lib`."""

import pathlib

import __main__
from tasks.lib.cli import quiet

_program = getattr(__main__, "__file__", None)
if _program and pathlib.Path(_program).resolve().parent == (
    pathlib.Path(__file__).resolve().parent
):
    quiet()
