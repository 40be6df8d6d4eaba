"""Markdown tables, as every report of the toolkit writes them."""


def table_row(cells) -> str:
    """'| a | b |': each cell as one line of text, its pipes escaped so
    that a cell never splits the row."""
    text = [str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells]
    return "| " + " | ".join(text) + " |"


def table(titles, rows) -> list[str]:
    """The lines of a table: titles, the rule under them, then the rows."""
    lines = [table_row(titles), table_row(["---"] * len(titles))]
    return lines + [table_row(row) for row in rows]
