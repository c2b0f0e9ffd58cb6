"""The machinery that runs the docs' code blocks (tests/docs_blocks.py) fails a block
that fails, and no block escapes it through an unknown fence or a stray directive."""

from __future__ import annotations

import re
from pathlib import Path
from unittest import SkipTest

import pytest
from sybil import Document
from sybil.example import SybilFailure
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

from .docs_blocks import DOCS, PAGE_KEY, ROOT, RUN, SHOWN_ONLY, commands, setup_page

INFO = re.compile(r"(?P<info>[^\n]*)$\n", re.MULTILINE)


def pages() -> list[Path]:
    return sorted(path for path in ROOT.rglob("*.md") if DOCS.should_parse(path))


def test_the_pages_are_the_readme_and_every_page_of_the_site() -> None:
    names = {str(path.relative_to(ROOT)) for path in pages()}
    assert "README.md" in names
    assert {"docs/index.md", "docs/encryption.md", "docs/cli/data.md"} <= names
    assert names == {"README.md"} | {
        str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md")
    }


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_fence_names_a_language_that_runs_or_is_shown_only(page: Path) -> None:
    document = Document(page.read_text(), str(page))
    for region in RawFencedCodeBlockLexer(info_pattern=INFO)(document):
        info = str(region.lexemes["info"]).strip()
        assert info in RUN | SHOWN_ONLY, (
            f"{page.name}: a fence with language {info!r} neither runs nor is known to be "
            f"data: use one of {sorted(RUN | SHOWN_ONLY)}"
        )


def test_a_transcript_splits_into_commands_and_their_shown_output() -> None:
    transcript = "$ echo a \\\n  b\na b\n$ true\n$ printf 'x\\ny'\nx\ny\n"
    assert commands(transcript) == [
        ("echo a \\\n  b", "a b"),
        ("true", ""),
        ("printf 'x\\ny'", "x\ny"),
    ]
    with pytest.raises(ValueError, match="must start with"):
        commands("output before any command\n")


def run_page(tmp_path: Path, text: str) -> list[BaseException | None]:
    """Each block's outcome when ``text`` is a page: None, or what it raised."""
    path = tmp_path / "page.md"
    path.write_text(text)
    document = DOCS.parse(path)
    setup_page(document.namespace)
    outcomes: list[BaseException | None] = []
    try:
        for example in document.examples():
            try:
                example.evaluate()
            except BaseException as exc:  # a skip is one too
                outcomes.append(exc)
            else:
                outcomes.append(None)
    finally:
        document.namespace.pop(PAGE_KEY).close()
    return outcomes


FAILING_PAGE = """
<!-- docs: embedded -->
```python
total = await __import__("asyncio").sleep(0, result=2)
assert total == 2
```

<!-- docs: embedded -->
```python
assert total == 3
```

<!-- docs: embedded -->
```console
$ echo "$((total_from_shell + 1))"
1
$ echo shown
not what it prints
```

<!-- docs: embedded -->
```sh
test -z "${MONGODB_URI:-}"
false
```

<!-- skip: next "not runnable here" -->
```sh
exit 3
```

```text
never run
```
"""


def test_a_block_that_fails_verbatim_fails(tmp_path: Path) -> None:
    passed, failed_assert, transcript, script, skip_directive, skipped = run_page(
        tmp_path, FAILING_PAGE
    )
    assert passed is None  # top-level await, and the namespace carries on
    assert isinstance(failed_assert, AssertionError)
    assert isinstance(transcript, SybilFailure)
    assert "not what it prints" in str(transcript)
    assert isinstance(script, SybilFailure)
    assert "exited 1" in str(script)
    assert skip_directive is None
    assert isinstance(skipped, SkipTest)
    assert str(skipped) == "not runnable here"


def test_a_directive_must_sit_right_before_a_runnable_block(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not right before a runnable block"):
        run_page(tmp_path, "<!-- docs: embedded -->\n\nsome text\n\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="unknown directive"):
        run_page(tmp_path, "<!-- docs: embeded -->\n```python\npass\n```\n")


def test_a_block_runs_on_the_wire_server_unless_it_says_embedded(tmp_path: Path) -> None:
    page = (
        '```sh\ntest -n "$MONGODB_URI"\n```\n\n'
        '<!-- docs: embedded -->\n```sh\ntest -z "${MONGODB_URI:-}"\n```\n'
    )
    assert run_page(tmp_path, page) == [None, None]
