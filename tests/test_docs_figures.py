"""Figures that depend on the code are computed, never typed in: the line counts of
docs/architecture.md come from scripts/line_counts.py when the site is built. The
README stays the short page a newcomer reads, and its links lead somewhere."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import markdown

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


class _Links(HTMLParser):
    """The ``href`` of every link, and the ``id`` of every element, of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and tag == "a" and value:
                self.hrefs.append(value)
            elif name == "id" and value:
                self.ids.add(value)


def _rendered(path: Path) -> _Links:
    """``path`` rendered as MkDocs renders a page (its headings' ids from the toc
    extension), then read back."""
    links = _Links()
    links.feed(markdown.markdown(path.read_text(), extensions=["toc", "tables", "fenced_code"]))
    return links


def test_every_link_of_the_readme_reaches_a_file_and_heading_that_exist() -> None:
    """The README is not part of the site, so `make docs` does not check its links."""
    hrefs = [h for h in _rendered(ROOT / "README.md").hrefs if "://" not in h]
    assert "docs/index.md" in hrefs
    for href in hrefs:
        target, _, anchor = href.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _rendered(path).ids, f"{target} has no heading #{anchor}"


def test_the_module_map_names_every_module_of_the_package() -> None:
    """docs/architecture.md's map is typed by hand: a module added, moved or renamed
    fails here until the map names it (a sub-package of apps/ or operations/ by its
    folder, as ``bench/``)."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "chatkit_mongo"
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        if len(parts) > 2:  # inside a sub-package of a layer
            assert f"`{parts[1]}/`" in page, f"the module map does not name {parts[1]}/"
        elif not (len(parts) == 2 and parts[1] == "__init__.py"):
            assert f"`{parts[-1]}`" in page or f"/{parts[-1]}`" in page, (
                f"the module map does not name {'/'.join(parts)}"
            )
