"""Figures that depend on the code are computed, never typed in: the line counts of
docs/architecture.md come from scripts/line_counts.py when the site is built, and the
README stays the short page a newcomer reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts import line_counts

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250


def test_the_architecture_page_gets_the_line_counts_of_the_code_at_build_time() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert line_counts.MARKER in page
    built = line_counts.on_page_markdown(page)
    assert line_counts.MARKER not in built
    store_lines = len((ROOT / "chatkit_mongo" / "store.py").read_text().splitlines())
    assert f"| `store.py` | {store_lines:,} |" in built
    modules = list((ROOT / "chatkit_mongo").rglob("*.py"))
    assert f"| all {len(modules)} modules |" in built


def test_the_counts_are_what_wc_counts(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("one\ntwo\n")
    (tmp_path / "sub" / "b.py").write_text("no newline at the end")
    (tmp_path / "notes.txt").write_text("not a module\n")
    assert line_counts.line_counts(tmp_path) == {"a.py": 2, "sub/b.py": 0}
    assert line_counts.table({"a.py": 2, "sub/b.py": 1200}).splitlines()[-2:] == [
        "| `sub/b.py` | 1,200 |",
        "| all 2 modules | 1,202 |",
    ]


def test_the_script_prints_the_table() -> None:
    printed = subprocess.run(
        [sys.executable, "scripts/line_counts.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.strip() == line_counts.table(line_counts.line_counts())


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
