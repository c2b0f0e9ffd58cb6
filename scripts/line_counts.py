"""The package's modules and their line counts: the table of docs/architecture.md.

``python scripts/line_counts.py`` prints it. The site gets it from this module too:
mkdocs.yml names it as a hook, and :func:`on_page_markdown` fills the page's marker
with the table of the code being built. Why generated at build time and not written
into the page: counts typed into the README went stale within days, and counts written
into the page by a script would go stale with every change that forgot to run it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = ROOT / "chatkit_mongo"
MARKER: Final = "<!-- line-counts: scripts/line_counts.py fills this in at build time -->"


def line_counts(package: Path = PACKAGE) -> dict[str, int]:
    """Each Python module of the package (its path inside it) and its number of lines,
    as ``wc -l`` counts them."""
    return {
        path.relative_to(package).as_posix(): path.read_bytes().count(b"\n")
        for path in sorted(package.rglob("*.py"))
    }


def table(counts: dict[str, int]) -> str:
    """The Markdown table: one row per module, then the total."""
    rows = [f"| `{name}` | {lines:,} |" for name, lines in counts.items()]
    total = f"| all {len(counts)} modules | {sum(counts.values()):,} |"
    return "\n".join(["| module | lines |", "| --- | ---: |", *rows, total])


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs' hook: a page's marker replaced by the table of the code as it is."""
    return markdown.replace(MARKER, table(line_counts()))


if __name__ == "__main__":
    print(table(line_counts()))
    sys.exit(0)
