"""tasks/lib/published.py: the article's figures, against its tables."""

import pytest

from tasks.lib import published
from tests.common import SHARED
from tests.common import require_shared

TABLES_FILE = SHARED / "published" / "exposure_bias_tables.md"
HEADINGS = {"csl": "## CSL title generation", "lcsts": "## LCSTS summarisation"}


def file_table(heading):
    """The rows of the Markdown table under `heading`, as tuples."""
    lines = require_shared(TABLES_FILE).read_text("utf-8").splitlines()
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[1].isdigit():
            rows.append((cells[0], int(cells[1]), *map(float, cells[2:])))
    return rows


@pytest.mark.parametrize("task", sorted(HEADINGS))
def test_figures_equal_the_articles_tables(task):
    lines = require_shared(TABLES_FILE).read_text("utf-8")
    header = "| strategy | beam | Rouge-L | Rouge-1 | Rouge-2 | BLEU |"
    assert lines.count(header) == 2  # the column order the code assumes
    assert list(published.TABLES[task]) == file_table(HEADINGS[task])


def test_reference_rows_are_fractions_labelled_published():
    rows = published.reference_rows("csl")
    assert len(rows) == 9
    first = rows[0]
    assert (first["beam"], first["strategy"]) == (1, "baseline (published)")
    assert first["published"] and first["n"] == published.RUNS
    assert first["rouge-l"]["mean"] == pytest.approx(0.6381)
    assert first["bleu"]["mean"] == pytest.approx(0.4552)
    with pytest.raises(ValueError, match="no published table"):
        published.reference_rows("lcsts-2")


def test_setting_differences_name_what_differs():
    differences, agreements = published.setting_differences(
        {
            "maxlen": 256,
            "lr": 1e-5,
            "epochs": 2,
            "model": "random init (1 layers)",
            "strategy_options": {"gp": {"epsilon": 1.0}, "fgm": {}},
        }
    )
    assert "maxlen: 256" in agreements and "lr: 1e-05" in agreements
    assert "epochs: here 2; published 20" in differences
    assert any(line.startswith("model: here random") for line in differences)
    assert "strategy_options: {'gp': {'epsilon': 1.0}}" in agreements
    assert not any("batch_size" in line for line in differences + agreements)
