"""The result tables of a benchmark run: markdown for the files, plain text for the terminal."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, digits: int = 0, unit: str = "") -> str:
    """A number with thousands separators and ``digits`` decimals; — when missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def verdict(ok: bool | None) -> str:
    """pass, **miss**, or — when there is nothing to judge."""
    return "—" if ok is None else ("pass" if ok else "**miss**")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    cells = [header, *([c.replace("**", "") for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
