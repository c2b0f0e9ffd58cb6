"""The code blocks of README.md and docs/**/*.md, each run as a test (with Sybil).

Why Sybil: it finds the fenced blocks and the HTML-comment directives of Markdown,
gives each block its own pytest item with a namespace shared by the blocks of one page,
and has the ``skip`` directive with a reason; what this module adds is only how a block
of each language is run:

* ``python``: executed in the page's namespace, top-level ``await`` allowed (as in
  ``python -m asyncio``); the blocks of a page share one event loop, so a store built in
  one block is used in the next. What a block shows is checked by its ``assert``\\ s.
* ``sh``, ``bash``, ``shell``: the whole block is one bash script (``set -e``,
  ``pipefail``); it must exit 0. Its output is not shown, so not checked.
* ``console``: a transcript. Each ``$ `` line (continued by a trailing ``\\``) is run
  with bash and must exit 0; the lines after it, up to the next ``$ ``, are its output
  (standard output and error as a terminal shows them), compared as doctest compares,
  with ``...`` matching anything and runs of whitespace equal. No lines: not checked.

Every block runs in a scratch directory of its page (files one block writes, the next
reads), with the worktree's package first on ``PYTHONPATH`` and the virtualenv's
``bin`` first on ``PATH``, and with ``MONGODB_URI`` naming a jongodb wire server that
the page starts for itself on first use. Why a server per page and not the session's:
the blocks use the names a reader would (database ``chatkit``, owner ``alice``), so
two pages on one server, in any order or at once under xdist, would see each other's
data; jongodb starts in under a second.

Directives, each in an HTML comment right before the block (nothing else between):

* ``<!-- skip: next "reason" -->`` (Sybil's): not runnable here, with the reason.
* ``<!-- docs: embedded -->``: runs without ``MONGODB_URI``, so the CLI's ``serve`` and
  ``bench`` pick the embedded in-memory backend.
* ``<!-- docs: needs CAPABILITY -->``: skipped, naming it, when the page's server lacks
  a capability of ``tests/capabilities.py`` (jongodb lacks ``explain``, for example).

docs/testing.md says the same for the writers of the pages.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

from . import capabilities, jongodb

ROOT: Final = Path(__file__).resolve().parent.parent
DOCUMENTS: Final = ("README.md", "docs/*.md", "docs/*/*.md")
"""The pages whose blocks run (paths relative to the repository's root)."""
NOT_DOCUMENTS: Final = ("*/README.md", "*/docs/*.md", "*/docs/*/*.md")
"""Why: a pattern matches from the right of a path, so without these a README.md or a
docs/ folder anywhere below the root (a cache, a dependency) would be taken too."""
PYTHON: Final = "python"
SCRIPTS: Final = frozenset({"sh", "bash", "shell"})
TRANSCRIPT: Final = "console"
RUN: Final = frozenset({PYTHON, TRANSCRIPT, *SCRIPTS})
"""The languages whose blocks run; a block of any other language is shown only."""
SHOWN_ONLY: Final = frozenset({"text", "json", "js", "javascript", "yaml", "toml", "jsonl"})
"""Languages of blocks that are data or another program's code, never run; a fence
with a language in neither set, or none, is refused by ``tests/test_docs_blocks.py``."""
COMMAND_TIMEOUT: Final = 300.0
"""Seconds a shell command may take: the benchmark's short runs fit."""
OUTPUT_FLAGS: Final = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PAGE_KEY: Final = "__docs_page__"
"""Where a page's state lives in its namespace: a name no block uses."""


@dataclass
class Page:
    """What the blocks of one page share: a scratch directory, an event loop and,
    once a block needs one, a wire server with its capabilities."""

    cwd: Path
    runner: asyncio.Runner = field(default_factory=asyncio.Runner)
    process: subprocess.Popen[str] | None = None
    uri: str | None = None
    missing: dict[str, str] | None = None

    def server_uri(self) -> str:
        """The page's server, started on first use: failing to start it fails the
        block under CI, and skips it elsewhere (as tests/capabilities.py does)."""
        if self.uri is None:
            try:
                self.process, self.uri = jongodb.start()
            except (jongodb.JongodbError, OSError) as exc:
                if jongodb.in_ci():
                    raise
                pytest.skip(f"no wire server for the docs' blocks: {exc}")
        return self.uri

    def lacks(self, capability: str) -> str | None:
        """Why the page's server cannot run a block needing ``capability``, or None."""
        if capability not in capabilities.CAPABILITIES:
            raise ValueError(
                f"unknown capability {capability!r}; known: {list(capabilities.CAPABILITIES)}"
            )
        if self.missing is None:
            _, self.missing = capabilities.probe(self.server_uri())
        answer = self.missing.get(capability)
        return None if answer is None else f"the wire server lacks {capability} ({answer})"

    def environment(self, embedded: bool) -> dict[str, str]:
        """The environment of a block: the worktree's package and the virtualenv's
        commands first, and MONGODB_URI naming the page's server unless embedded."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.pop("MONGODB_URI", None)
        if not embedded:
            env["MONGODB_URI"] = self.server_uri()
        return env

    def close(self) -> None:
        self.runner.close()
        if self.process is not None:
            jongodb.stop(self.process)
        shutil.rmtree(self.cwd, ignore_errors=True)


def setup_page(namespace: dict[str, Any]) -> None:
    namespace[PAGE_KEY] = Page(Path(tempfile.mkdtemp(prefix="chatkit-docs-")))


def teardown_page(namespace: dict[str, Any]) -> None:
    page: Page = namespace.pop(PAGE_KEY)
    page.close()


@dataclass(frozen=True)
class Block:
    """A block to run: its language, its source, and the directives before it."""

    language: str
    source: str
    embedded: bool = False
    needs: tuple[str, ...] = ()


def _directives(document: Document) -> dict[int, tuple[bool, tuple[str, ...]]]:
    """The ``docs:`` directives of a page, keyed by where the block they apply to
    starts: the first text after them that is not another directive."""
    regions = list(DirectiveInHTMLCommentLexer("docs", arguments=".+?")(document))
    # A region ends before its closing "-->" (Sybil's lexer leaves it out).
    ends = {region.start: document.text.index("-->", region.end) + 3 for region in regions}
    found: dict[int, tuple[bool, tuple[str, ...]]] = {}
    for region in regions:
        target = _next_text(document.text, ends[region.start])
        while target in ends:
            target = _next_text(document.text, ends[target])
        embedded, needs = found.get(target, (False, ()))
        words = str(region.lexemes["arguments"]).strip()
        if words == "embedded":
            embedded = True
        elif words.startswith("needs "):
            needs = (*needs, words.removeprefix("needs ").strip())
        else:
            raise ValueError(
                f"{document.path}: unknown directive 'docs: {words}' "
                "(known: 'docs: embedded', 'docs: needs CAPABILITY')"
            )
        found[target] = (embedded, needs)
    return found


def _next_text(text: str, position: int) -> int:
    match = re.compile(r"\s*").match(text, position)
    assert match is not None
    return match.end()


class BlockParser:
    """Every fenced block of a language in ``RUN``, as a runnable :class:`Block`."""

    def __call__(self, document: Document) -> Iterable[Region]:
        directives = _directives(document)
        lexer = FencedCodeBlockLexer(language=r"[\w+-]+")
        for region in lexer(document):
            language = str(region.lexemes["language"])
            if language not in RUN:
                continue
            embedded, needs = directives.pop(_next_text(document.text, region.start), (False, ()))
            region.parsed = Block(language, region.lexemes["source"], embedded, needs)
            region.evaluator = evaluate
            yield region
        if directives:
            raise ValueError(
                f"{document.path}: a 'docs:' directive not right before a runnable block"
            )


@contextmanager
def _inside(page: Page, embedded: bool) -> Iterator[dict[str, str]]:
    """The process's working directory and environment as a block sees them, restored
    afterwards (a Python block runs in this process)."""
    env = page.environment(embedded)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(page.cwd)
    try:
        yield env
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def evaluate(example: Example) -> str | None:
    """Run one block; a string returned is the failure Sybil reports."""
    __tracebackhide__ = True
    page: Page = example.namespace[PAGE_KEY]
    block: Block = example.parsed
    for capability in block.needs:
        if reason := page.lacks(capability):
            pytest.skip(reason)
    with _inside(page, block.embedded) as env:
        if block.language == PYTHON:
            _run_python(example, page)
            return None
        if block.language in SCRIPTS:
            return _run_script(block.source, env, page.cwd)
        return _run_transcript(block.source, env, page.cwd)


def _run_python(example: Example, page: Page) -> None:
    __tracebackhide__ = True
    source: Any = example.parsed.source
    padded = pad(str(source), example.line + getattr(source, "line_offset", 0))
    code = compile(
        padded, example.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    result = eval(code, example.namespace)  # the block is the test
    if asyncio.iscoroutine(result):
        page.runner.run(result)
    example.namespace.pop("__builtins__", None)


def _run(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _run_script(source: str, env: dict[str, str], cwd: Path) -> str | None:
    result = _run(source, env, cwd)
    if result.returncode != 0:
        return f"the block exited {result.returncode}:\n{result.stdout}"
    return None


def commands(transcript: str) -> list[tuple[str, str]]:
    """A console transcript as (command, shown output) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    continued = False
    for line in transcript.splitlines():
        if continued:
            command, output = pairs[-1]
            pairs[-1] = (f"{command}\n{line}", output)
        elif line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
        else:
            raise ValueError(f"a console block must start with '$ ': {line!r}")
        continued = line.endswith("\\")
    return [(command, "\n".join(output).strip()) for command, output in pairs]


def _run_transcript(source: str, env: dict[str, str], cwd: Path) -> str | None:
    checker = doctest.OutputChecker()
    for command, want in commands(source):
        result = _run(command, env, cwd)
        if result.returncode != 0:
            return f"$ {command}\nexited {result.returncode}:\n{result.stdout}"
        if want and not checker.check_output(want + "\n", result.stdout, OUTPUT_FLAGS):
            return f"$ {command}\nshowed:\n{want}\nbut printed:\n{result.stdout}"
    return None


DOCS: Final = Sybil(
    parsers=[SkipParser(), BlockParser()],
    path=str(ROOT),
    patterns=list(DOCUMENTS),
    excludes=list(NOT_DOCUMENTS),
    setup=setup_page,
    teardown=teardown_page,
    name="docs",
)
"""The Sybil of the docs: the repository's root conftest.py hands it to pytest."""
