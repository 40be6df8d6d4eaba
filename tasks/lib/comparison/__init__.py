"""Strategies compared over seeds and beam sizes (`tasks/compare.py`).

`statistics`: mean and std over seeds, the best of each beam block and the
entries within noise of it, the checks that runs compare at all; `tables`:
the Markdown table, CSV, legend and provenance header; `plots`: the
figure; `report`: all of them written for a set of runs.
"""
