"""Writing results into ``docs/results.md``: markdown tables in named sections.

Each evaluation script owns one section, delimited by HTML comments, and replaces only that
section when it runs again, so tables produced by different scripts (and at different times) live
in one page without overwriting each other. Every section states the command that produced it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from meshops.atomic import atomic_file

_HEADER = "# Results\n\nEvery table below was written by the command shown with it.\n"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def update_section(path: str | os.PathLike, key: str, text: str) -> Path:
    """Replace (or append) section ``key`` of the markdown file ``path`` with ``text``, atomically."""
    path = Path(path)
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    updated = pattern.sub(lambda _: block, current) if pattern.search(current) else current.rstrip() + "\n\n" + block
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(updated)
    return path
