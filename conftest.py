"""The repository's root conftest: the code blocks of README.md and docs/ are tests.

Why here and not in tests/: pytest asks a conftest to collect only the files under its
own directory, and the pages are outside tests/. How a block runs and how a page marks
one: tests/docs_blocks.py, docs/testing.md. The blocks of a page run in order, on one
worker: under pytest-xdist, distribute by file (``--dist loadfile`` or ``loadscope``).
"""

from __future__ import annotations

from tests.docs_blocks import DOCS

pytest_collect_file = DOCS.pytest()
