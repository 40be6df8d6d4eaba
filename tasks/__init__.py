"""Runnable experiments: each file here is a script (`python tasks/NAME.py
--help`); what they share is the package `tasks.lib`."""
