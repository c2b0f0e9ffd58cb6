"""The repository's root conftest: the code blocks of README.md and docs/ are tests.

Why here and not in tests/: pytest asks a conftest to collect only the files under its
own directory, and the pages are outside tests/. How a block runs and how a page marks
one: tests/docs_blocks.py, docs/testing.md.
"""

from __future__ import annotations

import pytest

from tests.docs_blocks import DOCS

pytest_collect_file = DOCS.pytest()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's, kept together")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The blocks of one page share its namespace, loop and scratch directory, so under
    xdist's ``--dist loadgroup`` they stay on one worker, in their order."""
    for item in items:
        if item.path.suffix == ".md":
            item.add_marker(pytest.mark.xdist_group(f"docs:{item.path.relative_to(DOCS.path)}"))
