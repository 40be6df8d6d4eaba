"""What the task scripts share: the seq2seq experiment, metrics, run folders.

The rule of `tasks/`: a file directly in it is a script, run as
`python tasks/NAME.py` (it holds a command line and `main`, and no other
script imports it); what scripts share lives here and is imported as
`tasks.lib.NAME`. Installing the project (`pip install -e .`) puts
`tasks` on the path, so scripts need no `sys.path` edits.
"""
